"""The browser console carries voice: a person talks to the agent in the page.

Everything is real: `voicectl up` starts the embedded LiveKit dev server, the local `llm` and
`embeddings` services, the web console and a livekit-agents worker in local mode (whisper STT,
llama.cpp LLM, piper or espeak-ng TTS); Letta is a stand-in that is down-ish, so the agent's
hybrid path answers from the LLM. Debian's Chromium runs the page headless with a fake
microphone fed from a WAV of a spoken phrase (tests/web/driver.mjs, playwright-core). The page
publishes the microphone on Connect, plays and measures the agent's audio with WebAudio, and
shows both transcripts, the agent's state and the turn's voice-to-voice latency; the test reads
what the page shows and what it measured.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import browser_missing, fail_missing, run_browser
from tests.support.local import PHRASES, missing_local, speech_wav, words
from tests.support.project import Project, processes_matching, wait_for
from tests.support.voice import project_settings, voice_project

SCREENSHOT = Path("/tmp/console-voice.png")
PHRASE = PHRASES[1]  # "Can you remind me to call my mother tomorrow morning?"
#: silence before the phrase: Chromium starts the file when the page opens the microphone,
#: and the agent needs a moment to join and listen
LEAD_S = 6.0
#: silence after it: Chromium loops the file, so the phrase comes again only after the turn
TAIL_S = 30.0
#: the reply as received by the page, RMS of its loudest analyser window: speech, not hiss
SPEECH_DBFS = -35.0


@dataclass
class Stack:
    project: Project
    web_url: str
    livekit_http: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack in local mode, started by the real `voicectl up` on free ports."""
    if (reason := browser_missing()) or (missing := missing_local()):
        fail_missing(reason or f"local extra missing: pip install -e '.[local]' ({missing})")
    if not shutil.which("espeak-ng"):
        fail_missing("espeak-ng missing: run scripts/install_test_deps.sh")
    root = tmp_path_factory.mktemp("console-voice")
    project = voice_project(root)
    settings = project_settings(project)
    web, lk_http = settings.web_port, settings.livekit_http_url
    try:
        project.run("up", check=True, timeout=240)
        yield Stack(project, f"http://127.0.0.1:{web}", lk_http)
    finally:
        project.run("down", timeout=90)
        for proc in processes_matching(str(root)):
            proc.kill()


def microphone_wav(path: Path) -> Path:
    """The phrase as the fake microphone's file: silence, the phrase, a long silence."""
    spoken = speech_wav(PHRASE, path.with_name("phrase.wav"))
    with wave.open(str(spoken), "rb") as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(rate * LEAD_S) + frames
                      + b"\x00\x00" * int(rate * TAIL_S))
    return path


def dev_state(stack: Stack) -> dict[str, Any]:
    with urllib.request.urlopen(stack.livekit_http + "/_dev/state", timeout=10) as resp:
        return json.load(resp)


def room_people(stack: Stack, room: str) -> list[dict[str, Any]]:
    rooms = [r for r in dev_state(stack)["rooms"] if r["name"] == room]
    return rooms[0]["participants"] if rooms else []


V2V_CELL = "#latency-list tr:first-child td:nth-child(3)"
REPLY = "#transcript .msg.agent:not(.interim) .text"


def test_a_person_talks_to_the_agent_in_the_browser(stack: Stack, tmp_path: Path) -> None:
    mic = microphone_wav(tmp_path / "mic.wav")
    room = f"console-voice-{int(time.time())}"
    out = run_browser(timeout=180, steps=[
        {"op": "goto", "url": stack.web_url + "/"},
        {"op": "wait_text", "selector": "#health-livekit", "pattern": "LiveKit ok"},
        {"op": "fill", "selector": "#room-input", "value": room},
        {"op": "click", "selector": "#connect-btn"},
        {"op": "wait_text", "selector": "#conn-state", "pattern": "^connected$"},
        {"op": "wait_text", "selector": "#mic-status", "pattern": "^on"},
        {"op": "wait_text", "selector": "#agent-state", "pattern": "^listening$"},
        # the turn: your words, the agent's reply as audio (latency), then as text
        {"op": "wait_text", "selector": V2V_CELL, "pattern": r"\d+ ms$|no |not ",
         "timeout_ms": 60000},
        {"op": "wait_text", "selector": REPLY, "pattern": r"\S", "timeout_ms": 40000},
        # the reply's text may end before its audio does: the turn ends when the agent listens
        {"op": "wait_text", "selector": "#agent-state", "pattern": "^listening$",
         "timeout_ms": 40000},
        {"op": "text", "selector": "#transcript .msg.user:not(.interim) .text"},
        {"op": "text", "selector": REPLY},
        {"op": "text", "selector": V2V_CELL},
        {"op": "text", "selector": "#transcript .msg.agent .lat"},
        {"op": "call", "fn": "() => window.voiceConsole.report({trace: true})"},
        {"op": "text", "selector": "#activity"},
        {"op": "screenshot", "path": str(SCREENSHOT), "full_page": True},
        {"op": "click", "selector": "#disconnect-btn"},
        {"op": "wait_text", "selector": "#conn-state", "pattern": "^disconnected$"},
        {"op": "text", "selector": "#mic-status"},
    ], args=[f"--use-file-for-fake-audio-capture={mic}", "--allow-loopback-in-peer-connection"])
    heard, reply, v2v_cell, chip, report, activity = out["results"][10:16]
    mic_after = out["results"][-1]
    trace = report.pop("trace")
    context = f"\nreport: {json.dumps(report, indent=1)}\nactivity:\n{activity}"
    onset = (report["turns"] or [{}])[0].get("onset_after_ms")
    if onset is not None:  # the levels around the reply's onset: [ms, mic dBFS, agent dBFS]
        context += f"\nlevels: {[x for x in trace if onset - 300 <= x[0] <= onset + 3000]}"

    # what the agent heard, shown as your words; what it said, shown as its reply
    assert words(heard) == words(PHRASE), context
    assert reply.strip(), context
    [turn] = report["turns"][:1]
    assert words(turn["said"]) == words(PHRASE) and turn["reply"].strip() == reply.strip()

    # the turn's latency, shown and measured in the page: a positive number of ms
    match = re.fullmatch(r"(\d+) ms", v2v_cell)
    assert match, f"voice to voice shows {v2v_cell!r}{context}"
    v2v = int(match.group(1))
    assert 0 < v2v < 30000 and v2v == turn["v2v_ms"], context
    assert chip == f"{v2v} ms voice to voice"
    # the transcript came back after you went quiet, and the audio after the transcript
    assert 0 < turn["speech_end_to_transcript_ms"] < v2v, context

    # the agent's audio reached the page and was speech, not silence
    assert report["meters"] == {"mic": True, "agent": True}, context
    assert report["mic_peak_dbfs"] > SPEECH_DBFS, context
    assert turn["reply_peak_dbfs"] > SPEECH_DBFS, context
    assert turn["reply_audible_ms"] > 300, context
    states = [s["state"] for s in report["agent_states"]]
    assert "thinking" in states and "speaking" in states, context

    # Disconnect left the room: the mic is off and the server no longer has the browser
    assert mic_after == "off"
    wait_for(lambda: not [p for p in room_people(stack, room)
                          if p["identity"].startswith("web-")], timeout=10)
    print(f"\nconsole voice: v2v {v2v} ms, transcript after {turn['speech_end_to_transcript_ms']}"
          f" ms, reply peak {turn['reply_peak_dbfs']} dBFS over {turn['reply_audible_ms']} ms "
          f"audible, mic peak {report['mic_peak_dbfs']} dBFS; heard {heard!r}, said {reply!r}")
