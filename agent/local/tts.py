"""Local text-to-speech as livekit-agents TTS plugins: piper (ONNX) and the espeak-ng program.

Both are non-streaming (`ChunkedStream`): AgentSession wraps them in a sentence-by-sentence
`tts.StreamAdapter`, exactly as it does OpenAI's TTS. piper-tts is GPL-3.0 and therefore the
optional `piper` extra; espeak-ng is run as a separate program (Debian's package).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from livekit.agents import APIConnectionError, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

#: Chat-template control tokens a small local model may leak (`<|im_end|>`), HTML-ish tags,
#: and markdown symbols: none of them should be read aloud.
_CONTROL = re.compile(r"<\|[^|>]*\|>|</?[A-Za-z][^<>]{0,40}>|[*_#`~]+")
_SPACES = re.compile(r"\s+")
SILENCE_MS = 40
#: Words after which the first piece of a reply is spoken, punctuation or not (0: off).
EAGER_WORDS = 6


def speakable(text: str) -> str:
    """`text` without control tokens, tags and markdown, whitespace collapsed."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def _silence(sample_rate: int, ms: int = SILENCE_MS) -> bytes:
    return b"\x00\x00" * (sample_rate * ms // 1000)


# --------------------------------------------------------------------------- piper


_voices: dict[tuple[str, int], Any] = {}
_voices_lock = threading.Lock()


def load_piper_voice(model_path: Path, config_path: Path, threads: int) -> Any:
    """The process's PiperVoice for this model (loaded once: ~1 s for a medium voice)."""
    key = (str(model_path), threads)
    with _voices_lock:
        voice = _voices.get(key)
        if voice is None:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig

            options = onnxruntime.SessionOptions()
            if threads > 0:
                options.intra_op_num_threads = threads
            # the LLM server generates while we synthesize: spinning threads would starve it
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            voice = _voices[key] = PiperVoice(
                session=onnxruntime.InferenceSession(
                    str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
                ),
                config=PiperConfig.from_dict(json.loads(config_path.read_text())),
            )
        return voice


class PiperTTS(tts.TTS):
    """piper neural TTS on the CPU; one audio chunk per sentence."""

    def __init__(
        self,
        *,
        model_path: Path | str,
        config_path: Path | str | None = None,
        threads: int = 0,
        speaker_id: int | None = None,
        length_scale: float | None = None,
        eager_words: int = EAGER_WORDS,
    ) -> None:
        self._model_path = Path(model_path)
        self._config_path = Path(config_path or f"{model_path}.json")
        config = json.loads(self._config_path.read_text())
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=eager_words > 0, aligned_transcript=True),
            sample_rate=int(config["audio"]["sample_rate"]),
            num_channels=1,
        )
        self._eager_words = eager_words
        self._threads = threads
        self._speaker_id = speaker_id
        self._length_scale = length_scale
        self._thread_load: threading.Thread | None = None

    @property
    def model(self) -> str:
        return self._model_path.stem

    @property
    def provider(self) -> str:
        return "piper"

    def load(self) -> Any:
        return load_piper_voice(self._model_path, self._config_path, self._threads)

    def prewarm(self) -> None:
        """Load the voice in a helper thread (AgentSession calls this at start)."""
        if self._thread_load is None:
            self._thread_load = threading.Thread(target=self.load, name="piper-load", daemon=True)
            self._thread_load.start()

    def syn_config(self) -> Any:
        from piper import SynthesisConfig

        return SynthesisConfig(speaker_id=self._speaker_id, length_scale=self._length_scale)

    async def pcm_chunks(self, text: str) -> AsyncIterator[bytes]:
        """16-bit PCM of `text`, one chunk per sentence, synthesized in a worker thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def put(item: bytes | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening
                stop.set()

        def work() -> None:
            try:
                voice = self.load()
                for chunk in voice.synthesize(text, syn_config=self.syn_config()):
                    if stop.is_set():
                        break
                    put(chunk.audio_int16_bytes)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                put(exc)
            finally:
                put(None)

        threading.Thread(target=work, name="piper-synth", daemon=True).start()
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise APIConnectionError(f"piper failed: {item}", retryable=False) from item
                yield item
        finally:
            stop.set()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> PiperChunkedStream:
        return PiperChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> PiperStream:
        if self._eager_words <= 0:
            return super().stream(conn_options=conn_options)  # type: ignore[return-value]
        return PiperStream(tts=self, conn_options=conn_options)


class PiperChunkedStream(tts.ChunkedStream):
    """One synthesis: piper runs in a worker thread, each sentence's audio is pushed as ready."""

    def __init__(self, *, tts: PiperTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._piper = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        rate = self._piper.sample_rate
        output_emitter.initialize(
            request_id=utils.shortuuid("piper_"), sample_rate=rate, num_channels=1,
            mime_type="audio/pcm",
        )
        text = speakable(self.input_text)
        pushed = False
        if text:
            async for pcm in self._piper.pcm_chunks(text):
                output_emitter.push(pcm)
                pushed = True
        if not pushed:  # nothing speakable: a moment of silence keeps the pipeline whole
            output_emitter.push(_silence(rate))
        output_emitter.flush()


class TextChunker:
    """Cuts streamed reply text into pieces to speak: the first one early, then sentences.

    The first piece ends at the first punctuation after a word or two, or after
    `eager_words` words, so the voice starts while the model is still writing its first
    sentence; later pieces are whole sentences (long ones cut at a clause).
    """

    _SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s")
    _CLAUSE_END = re.compile(r"[,;:—–]\s|[.!?…]+[\"')\]]*\s")

    def __init__(self, eager_words: int = 6, min_chars: int = 20, max_chars: int = 160) -> None:
        self._eager_words = eager_words
        self._min_chars = min_chars
        self._max_chars = max_chars
        self._buffer = ""
        self._first = True

    def push(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        while (piece := self._next()) is not None:
            out.append(piece)
        return out

    def flush(self) -> list[str]:
        piece, self._buffer = self._buffer.strip(), ""
        self._first = True
        return [piece] if piece else []

    def _take(self, end: int) -> str:
        piece, self._buffer = self._buffer[:end].strip(), self._buffer[end:]
        self._first = False
        return piece

    def _next(self) -> str | None:
        buf = self._buffer
        if self._first:
            for m in self._CLAUSE_END.finditer(buf):
                if len(buf[: m.start()].split()) >= 2:
                    return self._take(m.end())
            # no punctuation yet: cut after `eager_words` complete words
            end = len(buf) if buf[-1:].isspace() else buf.rstrip().rfind(" ") + 1
            if end > 0 and len(buf[:end].split()) >= self._eager_words:
                return self._take(end)
            return None
        for m in self._SENTENCE_END.finditer(buf):
            if m.end() >= self._min_chars:
                return self._take(m.end())
        if len(buf) > self._max_chars:
            clauses = [m.end() for m in self._CLAUSE_END.finditer(buf)
                       if m.end() >= self._min_chars]
            if clauses:
                return self._take(clauses[-1])
        return None


class PiperStream(tts.SynthesizeStream):
    """Streaming piper: text pieces from `TextChunker` are synthesized as they complete."""

    def __init__(self, *, tts: PiperTTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._piper = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        from livekit.agents.voice.io import TimedString

        rate = self._piper.sample_rate
        output_emitter.initialize(
            request_id=utils.shortuuid("piper_"), sample_rate=rate, num_channels=1,
            mime_type="audio/pcm", stream=True,
        )
        output_emitter.start_segment(segment_id=utils.shortuuid())
        chunker = TextChunker(eager_words=self._piper._eager_words)
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        async def forward() -> None:
            async for data in self._input_ch:
                if isinstance(data, self._FlushSentinel):
                    found = chunker.flush()
                else:
                    found = chunker.push(data)
                for piece in found:
                    pieces.put_nowait(piece)
            for piece in chunker.flush():
                pieces.put_nowait(piece)
            pieces.put_nowait(None)

        async def synthesize() -> None:
            duration = 0.0
            while (piece := await pieces.get()) is not None:
                output_emitter.push_timed_transcript(
                    TimedString(text=piece + " ", start_time=duration)
                )
                text = speakable(piece)
                if not text:
                    continue
                self._mark_started()
                async for pcm in self._piper.pcm_chunks(text):
                    output_emitter.push(pcm)
                    duration += len(pcm) / 2 / rate
                output_emitter.flush()

        tasks = [asyncio.create_task(forward()), asyncio.create_task(synthesize())]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)


# --------------------------------------------------------------------------- espeak-ng


ESPEAK_SAMPLE_RATE = 22050


def wav_pcm(data: bytes) -> tuple[int, bytes]:
    """(sample rate, PCM bytes) of a 16-bit mono WAV, tolerant of a streamed header's sizes."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    rate = struct.unpack_from("<I", data, 24)[0]
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk == b"data":
            return rate, data[pos + 8:]
        pos += 8 + size
    raise ValueError("WAV without a data chunk")


class EspeakTTS(tts.TTS):
    """The espeak-ng program as a TTS (robotic, tiny, no Python dependency)."""

    def __init__(self, *, voice: str = "en-us", words_per_minute: int = 175,
                 binary: str = "espeak-ng") -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=ESPEAK_SAMPLE_RATE, num_channels=1,
        )
        path = shutil.which(binary)
        if path is None:
            raise APIConnectionError(
                f"{binary} not found: apt-get install espeak-ng (or install the piper extra)",
                retryable=False,
            )
        self._binary = path
        self._voice = voice
        self._wpm = words_per_minute

    @property
    def model(self) -> str:
        return self._voice

    @property
    def provider(self) -> str:
        return "espeak-ng"

    async def render(self, text: str) -> bytes:
        """WAV bytes of `text`."""
        proc = await asyncio.create_subprocess_exec(
            self._binary, "-v", self._voice, "-s", str(self._wpm), "--stdout", text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise APIConnectionError(
                f"espeak-ng exited {proc.returncode}: {err.decode(errors='replace')[:200]}",
                retryable=False,
            )
        return out

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> EspeakChunkedStream:
        return EspeakChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid("espeak_"), sample_rate=ESPEAK_SAMPLE_RATE,
            num_channels=1, mime_type="audio/pcm",
        )
        text = speakable(self.input_text)
        pcm = b""
        if text:
            rate, pcm = wav_pcm(await self._espeak.render(text))
            if rate != ESPEAK_SAMPLE_RATE:
                raise APIConnectionError(f"espeak-ng wrote {rate} Hz audio", retryable=False)
        output_emitter.push(pcm[: len(pcm) - len(pcm) % 2] or _silence(ESPEAK_SAMPLE_RATE))
        output_emitter.flush()


__all__ = [
    "EspeakTTS", "PiperStream", "PiperTTS", "TextChunker", "load_piper_voice", "speakable",
    "wav_pcm",
]
