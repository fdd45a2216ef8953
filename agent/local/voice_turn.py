"""One voice turn without LiveKit: VAD → STT → the brain → TTS on a recorded utterance, timed.

The parts are the agent's own: Silero VAD (`agent.providers.load_vad`), the configured STT and
TTS plugins (the same seams the worker uses), the `Brain` in a text-only AgentSession (as
`voicectl chat` runs it), and livekit-agents' sentence-by-sentence `tts.StreamAdapter`, which
is how AgentSession drives a non-streaming TTS. The VAD segments the audio and the STT
transcribes the segment, as `stt.StreamAdapter` does in a session.

Stage times (first-audio latency), each from the end of the previous stage:

- end_of_speech: the user stops talking → VAD declares the end of speech (its silence wait)
- transcript: → the STT's final transcript
- llm_ttft: → the brain's first reply text
- tts_first_audio: → the first audio frame (waits for the first sentence, then synthesizes)
- total: the user stops talking → the first audio frame (the sum)

And `v2v_ms`, what `voicectl talk` measures in a room, on the same samples
(agent.voice_measure): the last voiced sample of the recording → the first audible 10 ms of
the reply, played from its first frame.

With `realtime=True` audio is fed at the pace it was recorded, so the clock is the wall
clock of a live conversation; otherwise as fast as the VAD takes it (end_of_speech is then
the VAD's silence wait in audio time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.config import Settings
from agent.voice_measure import first_sound_offset, voiced_end

if TYPE_CHECKING:  # pragma: no cover
    from livekit import rtc
    from livekit.agents import AgentSession, stt, tts, vad

    from agent.brain.brain import Brain
    from agent.brain.runtime import AgentRuntime

SAMPLE_RATE = 16000
FRAME_MS = 20
#: Silence fed after the recording so the VAD can see the speech end (then we stop early).
TRAILING_SILENCE_S = 2.0


class TurnError(RuntimeError):
    """A turn that could not run (no speech, no transcript); the message says why."""


@dataclass
class TurnReport:
    """What one voice turn took, stage by stage (milliseconds), and what was said."""

    end_of_speech_ms: float
    transcript_ms: float
    llm_ttft_ms: float
    tts_first_audio_ms: float
    total_ms: float
    transcript: str
    reply: str
    speech_s: float
    reply_audio_s: float = 0.0
    llm_reply_ms: float = 0.0
    tts_synth_ms: float | None = None
    v2v_ms: float | None = None
    brain_ttft_ms: float | None = None
    path: str = ""
    fallback: bool = False
    realtime: bool = True
    reply_sample_rate: int = 0
    reply_pcm: bytes = field(default=b"", repr=False)

    def stages(self) -> dict[str, float]:
        return {
            "end_of_speech": self.end_of_speech_ms,
            "transcript": self.transcript_ms,
            "llm_ttft": self.llm_ttft_ms,
            "tts_first_audio": self.tts_first_audio_ms,
        }

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("reply_pcm")
        return doc


# --------------------------------------------------------------------------- audio files


def read_wav(path: Path | str) -> np.ndarray:
    """A 16-bit PCM WAV (any rate, mono or stereo) as 16 kHz mono int16 samples."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            data = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc})") from None
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples; 16-bit PCM is needed")
    pcm = np.frombuffer(data, dtype=np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != SAMPLE_RATE:
        pcm = resample(pcm, rate, SAMPLE_RATE)
    return pcm


def resample(pcm: np.ndarray, rate: int, to: int) -> np.ndarray:
    """int16 mono samples at another rate (livekit's soxr resampler)."""
    from livekit import rtc

    resampler = rtc.AudioResampler(rate, to, num_channels=1,
                                   quality=rtc.AudioResamplerQuality.HIGH)
    frame = rtc.AudioFrame(pcm.tobytes(), rate, 1, len(pcm))
    out = [*resampler.push(frame), *resampler.flush()]
    if not out:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out])


def write_wav(path: Path | str, pcm: bytes, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)


def rms(pcm: bytes) -> float:
    """Root mean square of int16 samples (0 for silence, ~3000+ for speech)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


# --------------------------------------------------------------------------- the loop


def build_stt(settings: Settings) -> stt.STT:
    """The configured STT (local providers directly, others through agent.providers)."""
    from agent.local import LOCAL_STT_PROVIDERS

    if settings.stt_provider.lower() in LOCAL_STT_PROVIDERS:
        from agent.local.providers import build_stt as local_stt

        return local_stt(settings)
    from agent.providers import build_stt as provider_stt

    return provider_stt(settings)


def build_tts(settings: Settings) -> tts.TTS:
    """The configured TTS (local providers directly, others through agent.providers)."""
    from agent.local import LOCAL_TTS_PROVIDERS

    if settings.tts_provider.lower() in LOCAL_TTS_PROVIDERS:
        from agent.local.providers import build_tts as local_tts

        return local_tts(settings)
    from agent.providers import build_tts as provider_tts

    return provider_tts(settings)


class VoiceLoop:
    """VAD, STT, brain and TTS loaded once; `turn()` runs one timed voice turn."""

    def __init__(self, settings: Settings, *, runtime: AgentRuntime | None = None) -> None:
        self.settings = settings
        self._runtime = runtime
        self._own_runtime = runtime is None
        self.vad: vad.VAD | None = None
        self.stt: stt.STT | None = None
        self.tts: tts.TTS | None = None
        self.session: AgentSession | None = None
        self.brain: Brain | None = None
        self._on_text: Any = None
        self._start_session: Any = None
        self.load_ms: dict[str, float] = {}

    async def start(self) -> None:
        """Load the models (in parallel threads) and start the brain's text session."""
        # plugins register themselves on import, which must happen on the main thread
        from livekit.plugins import openai, silero  # noqa: F401

        from agent.brain.runtime import AgentRuntime
        from agent.chat import start_text_session
        from agent.providers import load_vad

        async def timed(name: str, fn: Any) -> Any:
            t0 = time.perf_counter()
            value = await asyncio.to_thread(fn)
            self.load_ms[name] = round((time.perf_counter() - t0) * 1000, 1)
            return value

        self.stt = build_stt(self.settings)
        self.tts = build_tts(self.settings)
        stt_engine = getattr(self.stt, "load", None)
        tts_voice = getattr(self.tts, "load", None)
        loads = [timed("vad", load_vad)]
        if stt_engine is not None:
            loads.append(timed("stt", stt_engine))
        if tts_voice is not None:
            loads.append(timed("tts", tts_voice))
        results = await asyncio.gather(*loads)
        self.vad = results[0]
        if self._runtime is None:
            self._runtime = AgentRuntime(self.settings, source="say")
        self._runtime.start()

        self._start_session = start_text_session
        await self.new_conversation()

    async def new_conversation(self) -> None:
        """Start the brain's text session afresh (no history: every turn alike)."""

        def on_text(text: str) -> None:
            if self._on_text is not None:
                self._on_text(text)

        if self.session is not None:
            await self.session.aclose()
        assert self._runtime is not None
        self.session, self.brain = await self._start_session(self._runtime, on_text=on_text)

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.aclose()
        if self._runtime is not None and self._own_runtime:
            await self._runtime.aclose(flush_timeout=0.0)
        for part in (self.stt, self.tts):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.aclose()

    async def __aenter__(self) -> VoiceLoop:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- one turn

    async def _segment(self, pcm: np.ndarray, realtime: bool
                       ) -> tuple[Any, float, float, float]:
        """Feed audio to the VAD until it ends the first utterance.

        Returns (the END_OF_SPEECH event, its perf_counter time, the end-of-speech delay ms,
        ms from the last voiced sample to that event).
        """
        from livekit import rtc
        from livekit.agents.vad import VADEventType

        assert self.vad is not None
        step = SAMPLE_RATE * FRAME_MS // 1000
        silence = np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), dtype=np.int16)
        audio = np.concatenate([pcm, silence])
        try:
            voiced_index = round(voiced_end(pcm, SAMPLE_RATE) * SAMPLE_RATE)
        except ValueError:
            raise TurnError("no speech found in the recording") from None
        stream = self.vad.stream()
        pushed_at: dict[int, float] = {}  # sample index (end of frame) -> wall time pushed

        async def feed() -> None:
            start = time.perf_counter()
            for i in range(0, len(audio) - step + 1, step):
                if realtime:
                    due = start + i / SAMPLE_RATE
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                chunk = audio[i:i + step]
                stream.push_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, step))
                pushed_at[i + step] = time.perf_counter()
                if not realtime and (i // step) % 25 == 0:
                    await asyncio.sleep(0)  # let the VAD keep up
            stream.end_input()

        feeder = asyncio.create_task(feed())
        try:
            async for event in stream:
                if event.type != VADEventType.END_OF_SPEECH:
                    continue
                now = time.perf_counter()
                end_index = event.samples_index - int(event.silence_duration * SAMPLE_RATE)
                if realtime:
                    def pushed(index: int, now: float = now) -> float:
                        """When the frame holding sample `index` was fed."""
                        frame_end = min((k for k in pushed_at if k >= index), default=None)
                        return pushed_at.get(frame_end, now) if frame_end else now

                    delay_ms = (now - pushed(end_index)) * 1000
                    after_voice_ms = (now - pushed(voiced_index)) * 1000
                else:
                    delay_ms = (event.silence_duration + event.inference_duration) * 1000
                    after_voice_ms = delay_ms + (end_index - voiced_index) / SAMPLE_RATE * 1000
                return event, now, delay_ms, after_voice_ms
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            await stream.aclose()
        raise TurnError("no speech found in the recording")

    async def turn(self, pcm: np.ndarray, *, realtime: bool = True) -> TurnReport:
        """One voice turn on 16 kHz mono int16 audio; the reply audio is in the report."""
        from livekit.agents import tokenize, utils
        from livekit.agents import tts as lk_tts

        assert self.stt is not None and self.tts is not None and self.session is not None
        event, t_eos, eos_ms, eos_after_voice_ms = await self._segment(pcm, realtime)
        speech_s = event.speech_duration

        result = await self.stt.recognize(buffer=utils.merge_frames(event.frames))
        t_text = time.perf_counter()
        transcript = result.alternatives[0].text.strip() if result.alternatives else ""
        if not transcript:
            raise TurnError("the STT heard no words")

        # as AgentSession's tts_node: a streaming TTS takes the text as it comes, any other
        # is driven sentence by sentence through the framework's StreamAdapter
        adapter: lk_tts.TTS = self.tts
        if not self.tts.capabilities.streaming:
            adapter = lk_tts.StreamAdapter(
                tts=self.tts,
                sentence_tokenizer=tokenize.blingfire.SentenceTokenizer(retain_format=True),
            )
        synth_ttfb: list[float] = []

        def on_metrics(metrics: Any) -> None:
            synth_ttfb.append(getattr(metrics, "ttfb", 0.0))

        self.tts.on("metrics_collected", on_metrics)
        stream = adapter.stream()
        first_text: list[float] = []
        reply_parts: list[str] = []

        def on_text(text: str) -> None:
            if not text:
                return
            if not first_text:
                first_text.append(time.perf_counter())
            reply_parts.append(text)
            stream.push_text(text)

        frames: list[rtc.AudioFrame] = []
        first_audio: list[float] = []

        async def collect() -> None:
            async for ev in stream:
                if not first_audio:
                    first_audio.append(time.perf_counter())
                frames.append(ev.frame)

        collector = asyncio.create_task(collect())
        self._on_text = on_text
        try:
            await self.session.run(user_input=transcript)
            t_reply = time.perf_counter()
            stream.end_input()
            await collector
        finally:
            self._on_text = None
            collector.cancel()
            self.tts.off("metrics_collected", on_metrics)
            await stream.aclose()
            if adapter is not self.tts:
                await adapter.aclose()
        if not first_text or not first_audio:
            raise TurnError("the brain or the TTS produced nothing")
        turn = self.brain.last_turn if self.brain is not None else None
        pcm_out = b"".join(bytes(f.data) for f in frames)
        rate = frames[0].sample_rate if frames else self.tts.sample_rate
        lead = first_sound_offset(np.frombuffer(pcm_out, dtype=np.int16), rate)

        def ms(a: float, b: float) -> float:
            return round((b - a) * 1000, 1)

        return TurnReport(
            end_of_speech_ms=round(eos_ms, 1),
            transcript_ms=ms(t_eos, t_text),
            llm_ttft_ms=ms(t_text, first_text[0]),
            tts_first_audio_ms=ms(first_text[0], first_audio[0]),
            total_ms=round(eos_ms + (first_audio[0] - t_eos) * 1000, 1),
            transcript=transcript,
            reply="".join(reply_parts).strip(),
            speech_s=round(speech_s, 2),
            reply_audio_s=round(len(pcm_out) / 2 / rate, 2),
            llm_reply_ms=ms(t_text, t_reply),
            tts_synth_ms=round(synth_ttfb[0] * 1000, 1) if synth_ttfb else None,
            v2v_ms=None if lead is None else round(
                eos_after_voice_ms + (first_audio[0] - t_eos + lead) * 1000, 1),
            brain_ttft_ms=turn.ms(turn.first_at) if turn is not None else None,
            path=turn.path if turn is not None else "",
            fallback=bool(turn.fallback) if turn is not None else False,
            realtime=realtime,
            reply_sample_rate=rate,
            reply_pcm=pcm_out,
        )


async def run_turn(settings: Settings, pcm: np.ndarray, *, realtime: bool = True
                   ) -> tuple[TurnReport, dict[str, float]]:
    """Load everything, run one turn, close; returns the report and the load times (ms)."""
    async with VoiceLoop(settings) as loop:
        report = await loop.turn(pcm, realtime=realtime)
        return report, dict(loop.load_ms)


__all__ = ["TurnError", "TurnReport", "VoiceLoop", "read_wav", "rms", "run_turn", "write_wav"]
