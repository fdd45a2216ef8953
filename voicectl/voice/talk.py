"""`voicectl talk [ROOM] --wav IN.wav [--out REPLY.wav] [--json]`: a caller in the terminal.

Joins a room (created by the dispatch when missing), sends the agent in, speaks the recording
as a microphone at real-time pace and listens. It prints what the agent heard, what it said and
the voice-to-voice time the caller felt, next to the agent's own figures for that turn from
the event log (present when the agent writes to this project's state directory).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import IO, Any

from agent.config import Settings
from voicectl.errors import EXIT_FAILED, EXIT_USAGE, VoicectlError
from voicectl.voice.wav_args import wav_args_problem

#: fields of the agent's `turn` event shown as stages, in pipeline order
STAGE_FIELDS = ("eou_ms", "stt_ms", "ttft_ms", "tts_ttfb_ms", "v2v_ms", "total_ms")
STAGE_LABELS = {
    "eou_ms": "end of turn (agent)", "stt_ms": "transcript (agent)",
    "ttft_ms": "LLM first token (agent)", "tts_ttfb_ms": "TTS first audio (agent)",
    "v2v_ms": "first audio published (agent)", "total_ms": "whole reply generated (agent)",
}  # fmt: skip


def agent_turn(settings: Settings, room: str, since: float, wait: float = 2.0) -> dict | None:
    """The agent's last `turn` event for this room after `since` (it is written at turn end)."""
    from agent.events import find_since

    deadline = time.monotonic() + wait
    while True:
        found = find_since(settings.events_path, since,
                           lambda r: r["event"] == "turn" and r.get("room") == room)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def stages_of(turn: dict | None) -> dict[str, float]:
    if not turn:
        return {}
    return {k: float(turn[k]) for k in STAGE_FIELDS if isinstance(turn.get(k), int | float)}


def render(doc: dict[str, Any], out: IO[str]) -> None:
    out.write(f"voicectl talk · room {doc['room']} · agent {doc['agent_identity']}\n")
    out.write(f"you said    {doc['speech_s']:.2f} s of speech\n")
    out.write(f"agent heard {doc['heard']!r}\n")
    out.write(f"agent said  {doc['reply']!r}\n\n")
    out.write(f"  {'voice to voice (what you felt)':<34}{doc['v2v_ms']:>8.0f} ms\n")
    if doc.get("heard_after_ms") is not None:
        out.write(f"  {'your words came back as text':<34}{doc['heard_after_ms']:>8.0f} ms\n")
    for key, value in doc["stages"].items():
        out.write(f"  {STAGE_LABELS.get(key, key):<34}{value:>8.0f} ms\n")
    if not doc["stages"]:
        out.write("  (no turn of this room in the event log: the agent writes elsewhere)\n")
    out.write(f"\n  joined in {doc['connect_ms']:.0f} ms, agent in {doc['agent_join_ms']:.0f} ms")
    if doc.get("wav_out"):
        out.write(f"; reply audio {doc['reply_audio_s']:.2f} s → {doc['wav_out']}")
    out.write("\n")


def run_talk(settings: Settings, room: str | None, wav_in: Path, wav_out: Path | None,
             json_out: bool, *, agent_name: str | None = None, dispatch: bool = True,
             timeout: float = 30.0, stdout: IO[str] | None = None,
             stderr: IO[str] | None = None) -> int:
    """Run `voicectl talk`; the exit code (0 ok, 1 nothing heard or no agent, 2 bad input)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr

    def fail(message: str, code: int) -> int:
        err.write(f"voicectl: error: {message}\n")
        return code

    from agent.local.voice_turn import read_wav, write_wav
    from agent.voice_measure import voiced_end
    from voicectl.livekit.api import check_room
    from voicectl.voice.caller import RX_RATE, CallError, call_once, new_room_name

    wav_in = Path(wav_in)
    if (problem := wav_args_problem(wav_in, wav_out)) is not None:
        return fail(problem, EXIT_USAGE)
    try:
        room = check_room(room) if room else new_room_name()
    except VoicectlError as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        pcm = read_wav(wav_in)
        voiced_end(pcm, 16000)
    except ValueError as exc:
        text = str(exc) if str(exc).startswith(str(wav_in)) else f"{wav_in}: {exc}"
        return fail(f"--wav {text}", EXIT_USAGE)
    try:
        result = asyncio.run(call_once(settings, room, pcm, dispatch=dispatch, timeout=timeout,
                                       agent_name=agent_name or settings.agent_name))
    except CallError as exc:
        return fail(str(exc), EXIT_FAILED)
    except VoicectlError as exc:
        return fail(str(exc), EXIT_FAILED)
    if wav_out is not None:
        write_wav(wav_out, result.exchange.reply_pcm, RX_RATE)
    turn = agent_turn(settings, room, result.exchange.asked_at)
    doc = result.to_json()
    doc.update(stages=stages_of(turn), turn=turn,
               wav_in=str(wav_in), wav_out=str(wav_out) if wav_out is not None else None)
    if json_out:
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        render(doc, out)
    return 0
