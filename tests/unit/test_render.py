"""voicectl/render: commands hand it data, it writes the text people read (exactly this text)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from voicectl.errors import UsageError
from voicectl.render import livekit as lk_render
from voicectl.render.chat import ChatTranscript
from voicectl.render.logs import LogLineWriter, circuit_line, turn_line
from voicectl.render.voice import say_report, talk_report


def test_chat_transcript_streams_a_turn_and_its_status() -> None:
    out = io.StringIO()
    chat = ChatTranscript(out)
    chat.opened("hybrid")
    chat.asked("hello", echo=True)
    chat.reply_text("Hi ")
    chat.reply_text("there.")
    chat.reply_end("hybrid", 412.4, True, "server_error")
    chat.asked("again", echo=False)
    chat.reply_end(None, None, False, None)
    chat.reply_end_unmeasured()
    chat.queued(2)
    assert out.getvalue() == (
        "voicectl chat · mode hybrid · /quit to leave\n"
        "you> hello\nagent> Hi there.\n  [hybrid · ttft 412 ms · fallback server_error]\n"
        "agent> \n  [—]\n\n"
        "2 turn(s) queued for Letta; they will be delivered later.\n")


def test_log_line_writer_prefixes_each_service_aligned() -> None:
    out = io.StringIO()
    writer = LogLineWriter(out, ["agent", "web"], prefix=True, colour=False, json_lines=False)
    line = SimpleNamespace(service="web", text="GET /",
                           to_json=lambda: {"service": "web", "ts": 1.0, "line": "GET /"})
    writer.line(line)
    LogLineWriter(out, ["web"], prefix=False, colour=False, json_lines=True).line(line)
    assert out.getvalue() == 'web   | GET /\n{"service": "web", "ts": 1.0, "line": "GET /"}\n'


def test_turn_and_circuit_lines() -> None:
    row = {"ts": None, "mode": "hybrid", "path": "letta", "ttft_ms": 120.04, "total_ms": None,
           "fallback": True}
    assert turn_line(row) == ("-  hybrid  letta     ttft    120.0 ms  total        - ms"
                              "  fallback")
    transition = {"ts": None, "dependency": "llm", "from": "closed", "to": "open",
                  "failures": 3, "open_s": 2.0, "still_open": True}
    assert circuit_line(transition) == "-  llm: closed → open (failures 3)  open 2.0s so far"


def test_dispatch_lines(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"agent_name": "voice", "room": "r1", "room_existed": False, "room_created": True,
              "dispatch_id": "AD_1", "accepted": True}
    lk_render.dispatched(result, waited=True)
    lk_render.dispatch_list([], "r1")
    assert capsys.readouterr().out == ("dispatched voice to r1 (new room (created)): AD_1\n"
                                       "worker accepted the job\nno dispatches in room r1\n")


def test_talk_report_without_agent_figures() -> None:
    doc = {"room": "r1", "agent_identity": "agent-1", "speech_s": 1.5, "heard": "hi",
           "reply": "hello", "v2v_ms": 900.0, "heard_after_ms": None, "stages": {},
           "connect_ms": 40.0, "agent_join_ms": 300.0, "wav_out": None}
    out = io.StringIO()
    talk_report(doc, out)
    assert out.getvalue().splitlines() == [
        "voicectl talk · room r1 · agent agent-1",
        "you said    1.50 s of speech",
        "agent heard 'hi'",
        "agent said  'hello'",
        "",
        "  voice to voice (what you felt)         900 ms",
        "  (no turn of this room in the event log: the agent writes elsewhere)",
        "",
        "  joined in 40 ms, agent in 300 ms",
    ]


def test_say_report_names_the_slowest_stage() -> None:
    stages = {"end_of_speech": 300.0, "transcript": 200.0, "llm_ttft": 500.0,
              "tts_first_audio": 100.0}
    report = SimpleNamespace(transcript="hi", speech_s=1.0, reply="hello", path="hybrid",
                             fallback=False, stages=lambda: stages, total_ms=1100.0,
                             v2v_ms=None, llm_reply_ms=800.0, reply_audio_s=1.2)
    result = SimpleNamespace(report=report, load_ms={}, wav_in=Path("/x/q.wav"), wav_out=None,
                             description="STT whisper · LLM m @ u · TTS piper")
    out = io.StringIO()
    say_report(result, out)
    text = out.getvalue()
    assert text.startswith("voicectl say · q.wav · STT whisper · LLM m @ u · TTS piper\n")
    assert "  slowest stage: LLM first token; whole reply generated in 800 ms" in text


def test_say_and_talk_raise_usage_errors_instead_of_printing(tmp_path: Path) -> None:
    from agent.config.loading import load_settings
    from voicectl.voice.say import run_say
    from voicectl.voice.talk import run_talk

    s = load_settings(tmp_path / "no.env", environ={"VOICECTL_HOME": str(tmp_path / "h")})
    with pytest.raises(UsageError):
        run_say(s, tmp_path / "missing.wav", None)
    with pytest.raises(UsageError) as info:
        run_talk(s, "bad room/name", tmp_path / "missing.wav", None)
    assert info.value.code == 2
