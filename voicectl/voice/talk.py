"""`voicectl talk [ROOM] --wav IN.wav [--out REPLY.wav] [--json]`: a caller in the terminal.

Joins a room (created by the dispatch when missing), sends the agent in, speaks the recording
as a microphone at real-time pace and listens. It reports what the agent heard, what it said and
the voice-to-voice time the caller felt, next to the agent's own figures for that turn from
the event log (present when the agent writes to this project's state directory).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from agent.config import Settings
from voicectl.errors import UsageError, VoicectlError
from voicectl.voice.wav_args import wav_args_problem

#: fields of the agent's `turn` event shown as stages, in pipeline order
STAGE_FIELDS = ("eou_ms", "stt_ms", "ttft_ms", "tts_ttfb_ms", "v2v_ms", "total_ms")


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


def run_talk(settings: Settings, room: str | None, wav_in: Path, wav_out: Path | None, *,
             agent_name: str | None = None, dispatch: bool = True,
             timeout: float = 30.0) -> dict[str, Any]:
    """Run `voicectl talk`: the call's report (the `--json` document).

    Bad input raises UsageError; nothing heard or no agent raises VoicectlError.
    """
    from agent.local.voice_turn import read_wav, write_wav
    from agent.voice_measure import voiced_end
    from voicectl.livekit.api import check_room
    from voicectl.voice.caller import RX_RATE, call_once, new_room_name

    wav_in = Path(wav_in)
    if (problem := wav_args_problem(wav_in, wav_out)) is not None:
        raise UsageError(problem)
    try:
        room = check_room(room) if room else new_room_name()
    except VoicectlError as exc:
        raise UsageError(str(exc)) from None
    try:
        pcm = read_wav(wav_in)
        voiced_end(pcm, 16000)
    except ValueError as exc:
        text = str(exc) if str(exc).startswith(str(wav_in)) else f"{wav_in}: {exc}"
        raise UsageError(f"--wav {text}") from None
    try:
        result = asyncio.run(call_once(settings, room, pcm, dispatch=dispatch, timeout=timeout,
                                       agent_name=agent_name or settings.agent_name))
    except VoicectlError as exc:  # CallError and the LiveKit calls': a failed call, exit 1
        raise VoicectlError(str(exc)) from None
    if wav_out is not None:
        write_wav(wav_out, result.exchange.reply_pcm, RX_RATE)
    turn = agent_turn(settings, room, result.exchange.asked_at)
    doc = result.to_json()
    doc.update(stages=stages_of(turn), turn=turn,
               wav_in=str(wav_in), wav_out=str(wav_out) if wav_out is not None else None)
    return doc
