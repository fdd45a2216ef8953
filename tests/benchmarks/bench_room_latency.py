"""Voice to voice through a LiveKit room against the same turn with no transport at all.

One local-mode stack (`voicectl up`: the embedded LiveKit dev server, the real worker, the
llama.cpp `llm` service) answers the same spoken question TURNS times, after a warm-up turn,
with the same prompt every time (HYBRID_HISTORY_MESSAGES=1), measured on the same samples
(agent.voice_measure): from the last voiced sample of the question to the first audible 10 ms
of the reply.

- room: a caller (`voicectl.voice.caller`, what `voicectl talk` runs) speaks it into a room at
  real-time pace; the reply is timed where the caller receives it. Three times: with the
  defaults (TURN_DETECTION=auto: livekit-agents' on-device end-of-turn model, which waits up
  to 2.5 s when the words sound unfinished), with TURN_DETECTION=vad (the end of speech plus
  livekit's 0.5 s endpointing wait), and with `say`'s own policy (vad,
  ENDPOINTING_MIN_DELAY_SECONDS=0: the turn ends when the VAD has heard the end of speech, as
  in `say`): the like-for-like figure the target is judged on;
- say: `voicectl say`'s loop (agent.local.voice_turn) on the same recording, same models,
  same `llm` service, its reply timed as if played from its first frame;
- say during a call: the same, while another process holds a silent call with the agent in a
  room (its microphone, the relay and the agent's listening all running): what carrying a
  call costs the turn's computing on this machine's cores, with no transport in the turn.

The transport is measured apart in the same run: tone onsets sent by one rtc client and
received by another through the same server (one way: Opus, the relay, both jitter buffers),
counted twice (question in, reply out). The room's extra time is then split into transport,
the call's load on the CPU (say during a call - say) and what is left: the agent session's own
turn handling (RoomIO, its STT adapter). Target: the room, with `say`'s turn policy, adds at
most 200 ms median over `say`.

Run: python -m tests.benchmarks.bench_room_latency [--turns N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.benchmarks.common import median, percentile
from tests.support.local import local_unavailable, speech_wav, words

TURNS = 10
QUESTION = "Can you remind me to call my mother tomorrow morning?"
TARGET_MS = 200.0
ONSETS = 10


async def room_turns(settings, pcm: np.ndarray, turns: int,
                     room: str) -> tuple[list[dict], str]:
    """The caller's exchanges (after a warm-up one) and the agent's identity."""
    from voicectl.voice.caller import Caller

    out = []
    async with Caller(settings, room, agent_name=settings.agent_name,
                      join_timeout=120, reply_timeout=60) as caller:
        await caller.summon()
        for i in range(turns + 1):
            x = await caller.ask(pcm)
            if i:  # the first is the warm-up
                out.append({"v2v_ms": x.v2v_ms, "heard_ms": x.heard_after_ms, "heard": x.heard,
                            "reply": x.reply})
            await asyncio.sleep(1.0)
        return out, caller.agent.identity if caller.agent else ""


async def say_turns(settings, pcm: np.ndarray, turns: int) -> list[dict]:
    """`say`'s reports, one conversation, as the room has (after a warm-up turn)."""
    from agent.local.voice_turn import VoiceLoop

    out = []
    async with VoiceLoop(settings) as loop:
        await loop.turn(pcm, realtime=True)  # warm-up
        for _ in range(turns):
            out.append((await loop.turn(pcm, realtime=True)).to_json())
    return out


def hold_call(proj, room: str) -> subprocess.Popen:
    """Another process in a silent call with the agent (until terminated); returns when
    the agent listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.bench_room_latency", "--hold-call", room,
         "--env-file", str(proj.root / ".env")],
        env={**os.environ, **proj.env}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening"):
        proc.kill()
        raise RuntimeError(f"the held call did not start: {line!r}")
    return proc


async def _hold(env_file: str, room: str) -> None:
    from agent.config.loading import load_settings
    from voicectl.voice.caller import Caller

    settings = load_settings(env_file=Path(env_file))
    async with Caller(settings, room, agent_name=settings.agent_name,
                      join_timeout=120) as caller:
        await caller.summon()
        print("listening", flush=True)
        await asyncio.Event().wait()


def cpu_percent(pid: int, seconds: float) -> float:
    """Share of one core a process (and its children) used over `seconds`."""
    import psutil

    def total() -> float:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        return sum(p.cpu_times().user + p.cpu_times().system for p in procs)

    before = total()
    time.sleep(seconds)
    return (total() - before) / seconds * 100


async def transport_onsets(settings, count: int) -> list[float]:
    """One-way tone onset latency (ms) between two rtc clients through the server."""
    from livekit import rtc

    from voicectl.livekit.api import join_token

    def token(identity: str) -> str:
        from datetime import timedelta

        return join_token(settings, "bench-onset", identity, timedelta(minutes=10))["token"]

    a, b = rtc.Room(), rtc.Room()
    got: asyncio.Future = asyncio.get_running_loop().create_future()
    b.on("track_subscribed", lambda t, *_: got.done() or got.set_result(t))
    await a.connect(settings.livekit_url, token("tone-a"))
    await b.connect(settings.livekit_url, token("tone-b"))
    source = rtc.AudioSource(48000, 1, queue_size_ms=20)
    await a.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track("t", source))
    track = await asyncio.wait_for(got, 20)
    chunks: list[tuple[float, np.ndarray]] = []

    async def record() -> None:
        async for ev in rtc.AudioStream(track, sample_rate=48000, num_channels=1):
            chunks.append((time.time(), np.frombuffer(ev.frame.data, dtype=np.int16).copy()))

    recorder = asyncio.create_task(record())
    sent: list[float] = []
    n, start = 0, time.time()
    for _ in range(count):
        for k in range(150):  # 1 s of silence, then 0.5 s of 440 Hz
            on = k >= 100
            t = (np.arange(480) + n * 480) / 48000
            pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16) if on \
                else np.zeros(480, np.int16)
            if k == 100:
                sent.append(start + n * 0.01)
            delay = start + n * 0.01 - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), 48000, 1, 480))
            n += 1
    await asyncio.sleep(0.5)
    recorder.cancel()
    await a.disconnect()
    await b.disconnect()
    onsets = []
    for at in sent:
        for arrived, samples in chunks:
            if arrived > at and np.sqrt(np.mean(samples.astype(float) ** 2)) > 300:
                onsets.append((arrived - at) * 1000)
                break
    return onsets


def reconfigure(proj, line: str) -> None:
    """Add a setting to the project's .env, restart the agent, wait until it is at ease."""
    from tests.support.project import wait_for
    from tests.support.voice import dev_state

    with (proj.root / ".env").open("a") as env:
        env.write(line + "\n")
    proj.run("restart", "agent", timeout=180)
    wait_for(lambda: [w for w in dev_state(proj)["workers"]
                      if w["status"] == "available" and w["load"] < 0.7], 120, 0.5)


def row(label: str, values: list[float]) -> str:
    return (f"{label:<48}{median(values):>8.0f}{percentile(values, 95):>8.0f}"
            f"{min(values):>8.0f}{max(values):>8.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_room_latency")
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--hold-call", metavar="ROOM", help=argparse.SUPPRESS)
    parser.add_argument("--env-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hold_call:
        asyncio.run(_hold(args.env_file, args.hold_call))
        return 0
    if (why := local_unavailable()) is not None:
        print(f"skipped: {why}")
        return 0
    os.environ["HF_HUB_OFFLINE"] = "1"
    from agent.local.voice_turn import read_wav
    from tests.support.voice import VOICE_SERVICES, project_settings, voice_project

    root = Path(tempfile.mkdtemp(prefix="bench-room-"))
    # every turn's prompt is the system prompt and this question, in the room and in say:
    # a growing history of the small model's replies (of random length) would time the
    # prompt, not the room
    proj = voice_project(root, HYBRID_HISTORY_MESSAGES="1")
    try:
        up = proj.run("up", *VOICE_SERVICES, timeout=300)
        if up.returncode != 0:
            print(f"voicectl up failed:\n{up.stderr[-2000:]}")
            return 1
        settings = project_settings(proj)
        pcm = read_wav(speech_wav(QUESTION, root / "question.wav"))
        load_before = os.getloadavg()[0]
        onsets = asyncio.run(transport_onsets(settings, ONSETS))
        auto, agent = asyncio.run(room_turns(settings, pcm, args.turns, "bench-auto"))
        reconfigure(proj, "TURN_DETECTION=vad")
        vad, _ = asyncio.run(room_turns(settings, pcm, args.turns, "bench-vad"))
        reconfigure(proj, "ENDPOINTING_MIN_DELAY_SECONDS=0")
        room, _ = asyncio.run(room_turns(settings, pcm, args.turns, "bench-say-policy"))
        say = asyncio.run(say_turns(settings, pcm, args.turns))
        call = hold_call(proj, "bench-held-call")
        try:
            server_pid = next(s["pid"] for s in json.loads(proj.run("status", "--json").stdout)
                              if s["name"] == "livekit")
            relay_cpu = cpu_percent(server_pid, 5.0)
            loaded = asyncio.run(say_turns(settings, pcm, args.turns))
        finally:
            call.terminate()
            call.wait(10)
        load_after = os.getloadavg()[0]
    except Exception:
        for service in ("agent", "livekit"):
            log = root / ".voicectl" / "logs" / f"{service}.log"
            if log.exists():
                print(f"--- the last lines of {service}.log", file=sys.stderr)
                print("\n".join(log.read_text(errors="replace").splitlines()[-40:]),
                      file=sys.stderr)
        raise
    finally:
        proj.run("down", timeout=120)
        shutil.rmtree(root, ignore_errors=True)

    v2v = [r["v2v_ms"] for r in room]
    v2v_auto = [r["v2v_ms"] for r in auto]
    v2v_vad = [r["v2v_ms"] for r in vad]
    heard = [r["heard_ms"] for r in room if r["heard_ms"] is not None]
    # a reply with no audible sample has no v2v (none was seen; counted below)
    said = [r["v2v_ms"] for r in say if r["v2v_ms"] is not None]
    said_loaded = [r["v2v_ms"] for r in loaded if r["v2v_ms"] is not None]
    transcript = [r["end_of_speech_ms"] + r["transcript_ms"] for r in say]
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.2f} → {load_after:.2f}")
    print(f"question: {QUESTION!r} ({len(pcm) / 16000:.2f} s); {args.turns} turns each after "
          f"a warm-up, the same prompt each time; agent {agent}")
    counts = "/".join(f"{sum(words(r['heard']) == words(QUESTION) for r in series)}"
                      for series in (room, vad, auto))
    print(f"room: heard exactly in {counts} of {len(room)} turns (say's policy/vad/auto); "
          f"e.g. reply {room[-1]['reply']!r}")
    print(f"say:  heard exactly in {sum(words(r['transcript']) == words(QUESTION) for r in say)}"
          f"/{len(say)} turns; audible replies {len(said)}/{len(say)} and "
          f"{len(said_loaded)}/{len(loaded)} during the held call")
    print(f"the dev server relaying a silent call: {relay_cpu:.0f}% of a core\n")
    header = f"{'last voiced sample -> first audible reply (ms)':<48}{'median':>8}{'p95':>8}" \
             f"{'min':>8}{'max':>8}"
    print(header)
    print("-" * len(header))
    print(row("room, say's turn policy (caller's ears)", v2v))
    print(row("room, TURN_DETECTION=vad", v2v_vad))
    print(row("room, defaults (TURN_DETECTION=auto)", v2v_auto))
    print(row("say (no transport)", said))
    print(row("say during a held call (no transport)", said_loaded))
    print(row("  room: transcript back at the caller", heard))
    print(row("  say: end of speech + transcript", transcript))
    print(row("transport one way (tone onset A→B)", onsets))
    print("-" * len(header))
    added = median(v2v) - median(said)
    transport = 2 * median(onsets)
    load = median(said_loaded) - median(said)
    session = added - transport - load
    print(f"the room adds {added:.0f} ms median ({median(v2v) / median(said):.2f}x say's): "
          f"transport {transport:.0f} ms (2 x one-way onset), the call's load on the CPU "
          f"{load:.0f} ms, the agent session's own turn handling {session:.0f} ms")
    print(f"turn policy, not transport: livekit's 0.5 s endpointing wait costs "
          f"{median(v2v_vad) - median(v2v):.0f} ms median, its end-of-turn model (the "
          f"default) {median(v2v_auto) - median(v2v_vad):.0f} ms more on this question")
    ok = added <= TARGET_MS
    print(f"target: room adds <= {TARGET_MS:.0f} ms median over say -> "
          f"{'met' if ok else 'NOT met'} ({added:.0f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
