"""faster-whisper as a livekit-agents STT plugin (non-streaming: AgentSession pairs it with VAD).

Whisper encodes a fixed 30 s window whatever the utterance's length: on a 2-core CPU that is
~0.35 s for tiny.en. A voice turn is a few seconds long, so `WhisperEngine` encodes a shorter
window (LOCAL_STT_WINDOW_SECONDS, default 10 s: ~4x faster, same words on our test phrases).
A repetitive transcript (a short-window hallucination) or a longer utterance goes through
faster-whisper's standard 30 s path instead.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectionError, stt, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import AudioBuffer

SAMPLE_RATE = 16000
#: Below this many seconds of margin the short window is not used (speech needs room).
WINDOW_MARGIN_SECONDS = 1.0
#: A transcript compressing better than this is a repetition loop (whisper's own threshold).
MAX_COMPRESSION_RATIO = 2.4
TOKENS_PER_SECOND = 8


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / max(1, len(zlib.compress(data)))


class WhisperEngine:
    """A loaded faster-whisper model and its fast short-window decoder (thread-safe)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int,
        compute_type: str = "int8",
        window_seconds: float = 10.0,
    ) -> None:
        # CTranslate2's OpenMP threads must not spin after a transcript: the LLM runs next
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model_dir = model_dir
        self.window_seconds = window_seconds
        self.model = WhisperModel(
            str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads,
            local_files_only=True,
        )
        self.multilingual = bool(self.model.model.is_multilingual)
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _tokenizer(self, language: str) -> Any:
        tok = self._tokenizers.get(language)
        if tok is None:
            tok = self._tokenizers[language] = self._tokenizer_cls(
                self.model.hf_tokenizer, self.multilingual, task="transcribe",
                language=language if self.multilingual else "en",
            )
        return tok

    def transcribe(self, audio: np.ndarray, language: str = "en") -> str:
        """Text of 16 kHz mono float32 audio."""
        with self._lock:
            duration = len(audio) / SAMPLE_RATE
            window = self.window_seconds
            if 0 < window < 30 and duration + WINDOW_MARGIN_SECONDS <= window:
                text = self._short_window(audio, language, duration)
                if compression_ratio(text) <= MAX_COMPRESSION_RATIO:
                    return text
            return self._standard(audio, language)

    def _short_window(self, audio: np.ndarray, language: str, duration: float) -> str:
        import ctranslate2
        from faster_whisper.transcribe import get_suppressed_tokens

        samples = int(self.window_seconds * SAMPLE_RATE)
        padded = np.zeros(samples, dtype=np.float32)
        padded[: len(audio)] = audio[:samples]
        frames = int(self.window_seconds * 100)
        features = self.model.feature_extractor(padded, padding=0)[:, :frames]
        tokenizer = self._tokenizer(language)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        result = self.model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            [prompt],
            beam_size=1,
            max_length=min(448, len(prompt) + int(duration * TOKENS_PER_SECOND) + 16),
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
        )
        return tokenizer.decode(result[0].sequences_ids[0]).strip()

    def _standard(self, audio: np.ndarray, language: str) -> str:
        segments, _info = self.model.transcribe(
            audio, language=language if self.multilingual else "en", beam_size=1,
            without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()


_engines: dict[tuple[str, int, str, float], WhisperEngine] = {}
_engines_lock = threading.Lock()


def load_engine(
    model_dir: Path, *, threads: int, compute_type: str = "int8", window_seconds: float = 10.0
) -> WhisperEngine:
    """The process's engine for this model and options (loaded once: ~0.7 s for tiny.en)."""
    key = (str(model_dir), threads, compute_type, window_seconds)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = WhisperEngine(
                model_dir, threads=threads, compute_type=compute_type,
                window_seconds=window_seconds,
            )
        return engine


def to_mono_16k(buffer: AudioBuffer) -> np.ndarray:
    """An AudioBuffer (any rate, int16, mono or interleaved) as 16 kHz mono float32."""
    frame = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        frame = rtc.AudioFrame(pcm.tobytes(), frame.sample_rate, 1, len(pcm))
    if frame.sample_rate != SAMPLE_RATE:
        resampler = rtc.AudioResampler(
            frame.sample_rate, SAMPLE_RATE, num_channels=1,
            quality=rtc.AudioResamplerQuality.HIGH,
        )
        out = [*resampler.push(frame), *resampler.flush()]
        pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out]) if out else (
            np.zeros(0, dtype=np.int16)
        )
    return pcm.astype(np.float32) / 32768.0


class WhisperSTT(stt.STT):
    """Local speech-to-text with faster-whisper (CTranslate2, int8, CPU)."""

    def __init__(
        self,
        *,
        model_dir: Path | str,
        language: str = "en",
        threads: int = 0,
        compute_type: str = "int8",
        window_seconds: float = 10.0,
    ) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=False, interim_results=False)
        )
        self._model_dir = Path(model_dir)
        self._language = language
        self._threads = threads or os.cpu_count() or 1
        self._compute_type = compute_type
        self._window = window_seconds
        self._thread_load: threading.Thread | None = None

    @property
    def model(self) -> str:
        return self._model_dir.name if self._model_dir.name != "model" else "whisper"

    @property
    def provider(self) -> str:
        return "faster-whisper"

    def load(self) -> WhisperEngine:
        """The loaded engine (blocking; loaded once per process)."""
        return load_engine(
            self._model_dir, threads=self._threads, compute_type=self._compute_type,
            window_seconds=self._window,
        )

    def prewarm(self) -> None:
        """Load the model in a helper thread (AgentSession calls this at start)."""
        if self._thread_load is None:
            self._thread_load = threading.Thread(
                target=self.load, name="whisper-load", daemon=True
            )
            self._thread_load.start()

    async def engine(self) -> WhisperEngine:
        """The loaded engine (loading it off the event loop the first time)."""
        return await asyncio.to_thread(self.load)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        lang = language if isinstance(language, str) and language else self._language
        try:
            audio = to_mono_16k(buffer)
            engine = await self.engine()
            started = time.perf_counter()
            text = await asyncio.to_thread(engine.transcribe, audio, lang)
        except Exception as exc:
            raise APIConnectionError(f"faster-whisper failed: {exc}", retryable=False) from exc
        duration = len(audio) / SAMPLE_RATE
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid("whisper_"),
            alternatives=[
                stt.SpeechData(
                    language=LanguageCode(lang), text=text, start_time=0.0, end_time=duration,
                    confidence=1.0 if text else 0.0,
                    metadata={"inference_ms": round((time.perf_counter() - started) * 1000, 1)},
                )
            ],
        )


__all__ = ["WhisperEngine", "WhisperSTT", "load_engine", "to_mono_16k"]
