"""Local mode: first-audio latency of a voice turn, stage by stage, on this machine's CPU.

A short utterance (espeak-ng, ~2 s) goes through the whole local loop, as `voicectl say` runs
it: Silero VAD → faster-whisper tiny.en → the brain (text-only AgentSession, hybrid path) →
the `llm` service (llama.cpp via xllamacpp, bundled gemma-3-270m, its own process) → piper
(streaming, first piece early). Audio is fed in real time; each run is a fresh conversation.

Stages (each from the end of the previous one): end of speech (the VAD's silence wait),
transcript (STT), LLM first token, TTS first audio; total = the user stops talking → the
first reply audio. Median of RUNS runs after one warm-up turn (the first turn's figures,
cold caches included, are shown apart). Target: median total <= 1.5 s.

Run: python -m tests.benchmarks.bench_local_latency
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.common import median, percentile
from tests.support.local import (
    LLM_HOME,
    local_env,
    local_unavailable,
    speech_source,
    speech_wav,
    start_server,
    stop_server,
    wait_ready,
)
from tests.support.ports import free_port

RUNS = 7
UTTERANCE = "Good morning, how are you today?"
TARGET_MS = 1500.0
STAGES = (
    ("end_of_speech_ms", "end of speech (VAD silence)"),
    ("transcript_ms", "transcript (whisper tiny.en)"),
    ("llm_ttft_ms", "LLM first token (gemma 270m)"),
    ("tts_first_audio_ms", "TTS first audio (piper)"),
    ("total_ms", "total to first audio"),
)


async def measure(settings, pcm, runs: int) -> tuple[dict, list[dict], dict]:
    from agent.local.voice_turn import VoiceLoop

    async with VoiceLoop(settings) as loop:
        cold = (await loop.turn(pcm, realtime=True)).to_json()
        reports = []
        for _ in range(runs):
            await loop.new_conversation()
            reports.append((await loop.turn(pcm, realtime=True)).to_json())
        return cold, reports, dict(loop.load_ms)


def main() -> int:
    if (why := local_unavailable()) is not None:
        print(f"skipped: {why}")
        return 0
    os.environ["HF_HUB_OFFLINE"] = "1"
    from agent.config.loading import load_settings
    from agent.local.voice_turn import read_wav
    from voicectl.services.local import probe_llm

    tmp = Path(tempfile.mkdtemp(prefix="bench-local-"))
    port = free_port()
    env = local_env(tmp / "state", port)
    env["LETTA_SERVER_URL"] = f"http://127.0.0.1:{free_port()}"  # Letta is not part of this
    (tmp / ".env").write_text("")
    settings = load_settings(tmp / ".env", environ=env)
    log = tmp / "llm.log"
    started = time.perf_counter()
    proc = start_server("agent.local.llm_server", local_env(LLM_HOME, port), log)
    try:
        wait_ready(lambda: probe_llm(settings.llm_base_url), proc, log, timeout=180)
        llm_ready_s = time.perf_counter() - started
        pcm = read_wav(speech_wav(UTTERANCE, tmp / "utterance.wav"))
        load_before = os.getloadavg()[0]
        cold, reports, load_ms = asyncio.run(measure(settings, pcm, RUNS))
        load_after = os.getloadavg()[0]
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.2f} → {load_after:.2f}"
          " (other work on the machine inflates every figure)")
    print(f"utterance: {UTTERANCE!r} ({len(pcm) / 16000:.2f} s, {speech_source()}); "
          f"llm service ready in {llm_ready_s:.1f} s; models loaded in-process: "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in load_ms.items()))
    print(f"heard: {reports[-1]['transcript']!r}; replies e.g. {reports[-1]['reply']!r}\n")
    header = f"{'stage (ms)':<32}{'median':>8}{'p90':>8}{'min':>8}{'max':>8}{'cold':>8}"
    print(header)
    print("-" * len(header))
    medians = {}
    for key, label in STAGES:
        values = [r[key] for r in reports]
        medians[key] = median(values)
        if key == "total_ms":
            print("-" * len(header))
        print(f"{label:<32}{medians[key]:>8.0f}{percentile(values, 90):>8.0f}"
              f"{min(values):>8.0f}{max(values):>8.0f}{cold[key]:>8.0f}")
    synth = [r["tts_synth_ms"] for r in reports if r.get("tts_synth_ms") is not None]
    if synth:
        print(f"  (of TTS first audio, piper's own synthesis of the first piece: median "
              f"{median(synth):.0f} ms; the rest waits for the LLM to write that piece)")
    stage_keys = [k for k, _ in STAGES if k != "total_ms"]
    dominant = max(stage_keys, key=lambda k: medians[k])
    compute = max((k for k in stage_keys if k != "end_of_speech_ms"), key=lambda k: medians[k])
    label = dict(STAGES)
    share = medians[dominant] / medians["total_ms"] * 100
    print(f"\ndominant stage: {label[dominant]} ({medians[dominant]:.0f} ms, {share:.0f}% of "
          f"the total); largest compute stage: {label[compute]} ({medians[compute]:.0f} ms)")
    ok = medians["total_ms"] <= TARGET_MS
    print(f"target: median total <= {TARGET_MS:.0f} ms -> {'met' if ok else 'NOT met'} "
          f"({medians['total_ms']:.0f} ms over {len(reports)} runs)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
