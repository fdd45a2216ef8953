"""`voicectl say` and `voicectl talk` for people: what was heard and said, and each stage's time."""

from __future__ import annotations

import sys
from typing import IO, Any

SAY_STAGE_LABELS = (
    ("end_of_speech", "end of speech (VAD)"),
    ("transcript", "transcript (STT)"),
    ("llm_ttft", "LLM first token"),
    ("tts_first_audio", "TTS first audio"),
)
#: the figure `voicectl talk` gives through a room, measured on the same samples
V2V_LABEL = "voice to voice (first audible reply)"
#: the agent's own figures of a `turn` event, as `talk` shows them
TALK_STAGE_LABELS = {
    "eou_ms": "end of turn (agent)", "stt_ms": "transcript (agent)",
    "ttft_ms": "LLM first token (agent)", "tts_ttfb_ms": "TTS first audio (agent)",
    "v2v_ms": "first audio published (agent)", "total_ms": "whole reply generated (agent)",
}  # fmt: skip


def say_report(result: Any, out: IO[str] | None = None) -> None:
    """A voice.say.SayResult: the exchange, the stages, the slowest one."""
    out = out or sys.stdout
    report, wav_out = result.report, result.wav_out
    out.write(f"voicectl say · {result.wav_in.name} · {result.description}\n")
    if result.load_ms:
        loads = ", ".join(f"{k} {v:.0f} ms" for k, v in result.load_ms.items())
        out.write(f"models loaded ({loads}); not part of the turn\n")
    out.write(f"you said  {report.transcript!r}  ({report.speech_s:.2f} s of speech)\n")
    fallback = " (fallback)" if report.fallback else ""
    out.write(f"agent     {report.reply!r}  [{report.path}{fallback}]\n\n")
    stages = report.stages()
    width = len(V2V_LABEL) + 2
    for key, label in SAY_STAGE_LABELS:
        out.write(f"  {label:<{width}}{stages[key]:>7.0f} ms\n")
    out.write(f"  {'total (to first audio)':<{width}}{report.total_ms:>7.0f} ms\n")
    if report.v2v_ms is not None:
        out.write(f"  {V2V_LABEL:<{width}}{report.v2v_ms:>7.0f} ms\n")
    dominant = max(SAY_STAGE_LABELS, key=lambda kv: stages[kv[0]])[1]
    out.write(f"\n  slowest stage: {dominant}; whole reply generated in "
              f"{report.llm_reply_ms:.0f} ms after the transcript\n")
    if wav_out is not None:
        out.write(f"  reply audio {report.reply_audio_s:.2f} s → {wav_out}\n")


def talk_report(doc: dict[str, Any], out: IO[str] | None = None) -> None:
    """voice.talk.run_talk's document: what the agent heard and said, the caller's and the
    agent's times."""
    out = out or sys.stdout
    out.write(f"voicectl talk · room {doc['room']} · agent {doc['agent_identity']}\n")
    out.write(f"you said    {doc['speech_s']:.2f} s of speech\n")
    out.write(f"agent heard {doc['heard']!r}\n")
    out.write(f"agent said  {doc['reply']!r}\n\n")
    out.write(f"  {'voice to voice (what you felt)':<34}{doc['v2v_ms']:>8.0f} ms\n")
    if doc.get("heard_after_ms") is not None:
        out.write(f"  {'your words came back as text':<34}{doc['heard_after_ms']:>8.0f} ms\n")
    for key, value in doc["stages"].items():
        out.write(f"  {TALK_STAGE_LABELS.get(key, key):<34}{value:>8.0f} ms\n")
    if not doc["stages"]:
        out.write("  (no turn of this room in the event log: the agent writes elsewhere)\n")
    out.write(f"\n  joined in {doc['connect_ms']:.0f} ms, agent in {doc['agent_join_ms']:.0f} ms")
    if doc.get("wav_out"):
        out.write(f"; reply audio {doc['reply_audio_s']:.2f} s → {doc['wav_out']}")
    out.write("\n")
