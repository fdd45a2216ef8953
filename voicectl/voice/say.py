"""`voicectl say --wav IN.wav [--out REPLY.wav]`: one voice turn without LiveKit, timed by stage.

VAD, STT, the agent's brain and TTS run on a recorded utterance (agent.local.voice_turn);
each stage's first-audio latency is printed: end of speech, transcript, LLM time to first
token, TTS first audio and the total. With the local providers (LOCAL_MODE=true) nothing
leaves the machine; the LLM is the `llm` service (`voicectl up llm`) or OLLAMA_URL.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import IO, Any

from agent.config import ConfigError, Settings
from voicectl.errors import EXIT_FAILED, EXIT_USAGE
from voicectl.voice.wav_args import wav_args_problem

STAGE_LABELS = (
    ("end_of_speech", "end of speech (VAD)"),
    ("transcript", "transcript (STT)"),
    ("llm_ttft", "LLM first token"),
    ("tts_first_audio", "TTS first audio"),
)
#: the figure `voicectl talk` gives through a room, measured on the same samples
V2V_LABEL = "voice to voice (first audible reply)"


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


def render(report: Any, load_ms: dict[str, float], wav_in: Path, wav_out: Path | None,
           settings: Settings, out: IO[str]) -> None:
    """The human-readable result."""
    out.write(f"voicectl say · {wav_in.name} · {_describe(settings)}\n")
    if load_ms:
        loads = ", ".join(f"{k} {v:.0f} ms" for k, v in load_ms.items())
        out.write(f"models loaded ({loads}); not part of the turn\n")
    out.write(f"you said  {report.transcript!r}  ({report.speech_s:.2f} s of speech)\n")
    fallback = " (fallback)" if report.fallback else ""
    out.write(f"agent     {report.reply!r}  [{report.path}{fallback}]\n\n")
    stages = report.stages()
    width = len(V2V_LABEL) + 2
    for key, label in STAGE_LABELS:
        out.write(f"  {label:<{width}}{stages[key]:>7.0f} ms\n")
    out.write(f"  {'total (to first audio)':<{width}}{report.total_ms:>7.0f} ms\n")
    if report.v2v_ms is not None:
        out.write(f"  {V2V_LABEL:<{width}}{report.v2v_ms:>7.0f} ms\n")
    dominant = max(STAGE_LABELS, key=lambda kv: stages[kv[0]])[1]
    out.write(f"\n  slowest stage: {dominant}; whole reply generated in "
              f"{report.llm_reply_ms:.0f} ms after the transcript\n")
    if wav_out is not None:
        out.write(f"  reply audio {report.reply_audio_s:.2f} s → {wav_out}\n")


def run_say(
    settings: Settings,
    wav_in: Path,
    wav_out: Path | None,
    json_out: bool,
    *,
    realtime: bool = True,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run `voicectl say`; returns the exit code (0 ok, 1 the turn failed, 2 bad input)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr

    def fail(message: str, code: int) -> int:
        err.write(f"voicectl: error: {message}\n")
        return code

    from agent.local.voice_turn import TurnError, read_wav, run_turn, write_wav

    wav_in = Path(wav_in)
    if (problem := wav_args_problem(wav_in, wav_out)) is not None:
        return fail(problem, EXIT_USAGE)
    try:
        pcm = read_wav(wav_in)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    why = _llm_reachable(settings)
    if why is not None:
        hint = ("start it with `voicectl up llm`" if settings.local_mode
                else "set LOCAL_MODE=true or LLM_BASE_URL")
        return fail(f"the LLM does not answer ({why}): {hint}", EXIT_FAILED)
    try:
        report, load_ms = asyncio.run(run_turn(settings, pcm, realtime=realtime))
    except TurnError as exc:
        return fail(str(exc), EXIT_FAILED)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    if wav_out is not None:
        write_wav(wav_out, report.reply_pcm, report.reply_sample_rate)
    if json_out:
        doc = report.to_json()
        doc.update(load_ms=load_ms, wav_in=str(wav_in),
                   wav_out=str(wav_out) if wav_out is not None else None)
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        render(report, load_ms, wav_in, Path(wav_out) if wav_out else None, settings, out)
    return 0


__all__ = ["run_say"]
