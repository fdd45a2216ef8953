"""`voicectl say --wav IN.wav [--out REPLY.wav]`: one voice turn without LiveKit, timed by stage.

VAD, STT, the agent's brain and TTS run on a recorded utterance (agent.local.voice_turn);
each stage's first-audio latency is measured: end of speech, transcript, LLM time to first
token, TTS first audio and the total. With the local providers (LOCAL_MODE=true) nothing
leaves the machine; the LLM is the `llm` service (`voicectl up llm`) or OLLAMA_URL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import ConfigError, Settings
from voicectl.errors import UsageError, VoicectlError
from voicectl.voice.wav_args import wav_args_problem


def _llm_reachable(settings: Settings) -> str | None:
    """None when the brain's LLM endpoint answers HTTP, else why not."""
    from agent.providers import llm_base_url
    from voicectl.services.probes import http_get

    base = (llm_base_url(settings) or "https://api.openai.com/v1").rstrip("/")
    try:
        status, _ = http_get(base + "/models", timeout=3.0)
    except OSError as exc:
        return f"{base}: {exc or type(exc).__name__}"
    return None if status < 500 else f"{base}/models answered {status}"


def _describe(settings: Settings) -> str:
    from agent.providers import llm_base_url

    return (f"STT {settings.stt_provider} · LLM {settings.llm_model} @ "
            f"{llm_base_url(settings) or 'api.openai.com'} · TTS {settings.tts_provider}")


@dataclass
class SayResult:
    """One timed turn: the report, the model load times (not part of the turn), the files."""

    report: Any
    load_ms: dict[str, float]
    wav_in: Path
    wav_out: Path | None
    description: str

    def to_json(self) -> dict[str, Any]:
        doc = self.report.to_json()
        doc.update(load_ms=self.load_ms, wav_in=str(self.wav_in),
                   wav_out=str(self.wav_out) if self.wav_out is not None else None)
        return doc


def run_say(settings: Settings, wav_in: Path, wav_out: Path | None, *,
            realtime: bool = True) -> SayResult:
    """Run `voicectl say`: bad input raises UsageError, a failed turn VoicectlError."""
    from agent.local.voice_turn import TurnError, read_wav, run_turn, write_wav

    wav_in = Path(wav_in)
    wav_out = Path(wav_out) if wav_out is not None else None
    if (problem := wav_args_problem(wav_in, wav_out)) is not None:
        raise UsageError(problem)
    try:
        pcm = read_wav(wav_in)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    why = _llm_reachable(settings)
    if why is not None:
        hint = ("start it with `voicectl up llm`" if settings.local_mode
                else "set LOCAL_MODE=true or LLM_BASE_URL")
        raise VoicectlError(f"the LLM does not answer ({why}): {hint}")
    try:
        report, load_ms = asyncio.run(run_turn(settings, pcm, realtime=realtime))
    except TurnError as exc:
        raise VoicectlError(str(exc)) from None
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if wav_out is not None:
        write_wav(wav_out, report.reply_pcm, report.reply_sample_rate)
    return SayResult(report, load_ms, wav_in, wav_out, _describe(settings))


__all__ = ["SayResult", "run_say"]
