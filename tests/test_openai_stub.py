"""The OpenAI-compatible stub, exercised with the real `openai` client and raw HTTP."""

from __future__ import annotations

import base64
import json
import math
import struct
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.fakes.openai_stub import StubHandle, start_openai_stub
from tests.support.ports import free_port
from tests.support.project import REPO

SEND_MESSAGE = {
    "type": "function",
    "function": {
        "name": "send_message",
        "description": "Send a message to the user",
        "parameters": {"type": "object", "properties": {"message": {"type": "string"}},
                       "required": ["message"]},
    },
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object",
                       "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                       "required": ["query", "limit"]},
    },
}


def client(stub: StubHandle, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0, **kw)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ------------------------------------------------------------------ models and replies


def test_models_listed(openai_stub: StubHandle) -> None:
    ids = [m.id for m in client(openai_stub).models.list()]
    assert {"gpt-5-mini", "gpt-4o-mini", "text-embedding-3-small"} <= set(ids)


def test_chat_echoes_last_user_message_with_usage(openai_stub: StubHandle) -> None:
    resp = client(openai_stub).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "be brief"}, *user("first"),
                  {"role": "assistant", "content": "ok"}, *user("Hello there!")],
    )
    assert resp.choices[0].message.content == "You said: Hello there."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_reply_reads_memory_from_system_prompt(openai_stub: StubHandle) -> None:
    c = client(openai_stub)
    system = {"role": "system", "content": "<human>\nname: Alice\nfavourite colour: green\n"}
    ask = c.chat.completions.create(model="m", messages=[system, *user("What is my name?")])
    assert ask.choices[0].message.content == "Your name is Alice."
    colour = c.chat.completions.create(
        model="m", messages=[system, *user("what's my favourite colour")]
    )
    assert colour.choices[0].message.content == "Your favourite colour is green."
    unknown = c.chat.completions.create(model="m", messages=[system, *user("What is my job?")])
    assert unknown.choices[0].message.content == "I don't know your job."


def test_letta_packed_user_message_is_unwrapped(openai_stub: StubHandle) -> None:
    packed = json.dumps({"type": "user_message", "message": "hi there", "time": "now"})
    resp = client(openai_stub).chat.completions.create(model="m", messages=user(packed))
    assert resp.choices[0].message.content == "You said: hi there."


def test_fixed_reply(openai_stub: StubHandle) -> None:
    openai_stub.control(reply="Fixed.")
    resp = client(openai_stub).chat.completions.create(model="m", messages=user("x"))
    assert resp.choices[0].message.content == "Fixed."


# ------------------------------------------------------------------ streaming


def test_stream_parsed_by_openai_client(openai_stub: StubHandle) -> None:
    stream = client(openai_stub).chat.completions.create(
        model="gpt-5-mini", messages=user("stream me a reply"), stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: stream me a reply."
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 6  # You / said: / stream / me / a / reply.
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


def test_stream_raw_sse_format(openai_stub: StubHandle) -> None:
    body = {"model": "m", "messages": user("raw"), "stream": True}
    with httpx.stream("POST", f"{openai_stub.base_url}/chat/completions", json=body) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["connection"] == "close"
        raw = resp.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk" and first["id"].startswith("chatcmpl-")
    assert "usage" not in raw  # only with stream_options.include_usage


def test_every_response_closes_the_connection(openai_stub: StubHandle) -> None:
    for method, path in (("GET", "/models"), ("POST", "/embeddings")):
        body = {"model": "text-embedding-3-small", "input": "x"} if method == "POST" else None
        resp = httpx.request(method, openai_stub.base_url + path, json=body)
        assert resp.headers["connection"] == "close"


# ------------------------------------------------------------------ tool calls


def test_required_tool_choice_calls_send_message(openai_stub: StubHandle) -> None:
    resp = client(openai_stub).chat.completions.create(
        model="m", messages=user("hi"), tools=[LOOKUP, SEND_MESSAGE], tool_choice="required"
    )
    msg = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls" and msg.content is None
    call = msg.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "send_message"
    assert json.loads(call.function.arguments) == {"message": "You said: hi."}


def test_auto_tool_choice_answers_with_content(openai_stub: StubHandle) -> None:
    resp = client(openai_stub).chat.completions.create(
        model="m", messages=user("hi"), tools=[SEND_MESSAGE], tool_choice="auto"
    )
    assert resp.choices[0].message.content == "You said: hi."
    assert not resp.choices[0].message.tool_calls


def test_named_tool_choice_and_placeholder_arguments(openai_stub: StubHandle) -> None:
    resp = client(openai_stub).chat.completions.create(
        model="m", messages=user("find"), tools=[SEND_MESSAGE, LOOKUP],
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"query": "You said: find.", "limit": 0}


def test_tool_mark_in_user_message(openai_stub: StubHandle) -> None:
    resp = client(openai_stub).chat.completions.create(
        model="m", messages=user('please [[tool:lookup {"query": "cats", "limit": 3}]]'),
        tools=[SEND_MESSAGE, LOOKUP],
    )
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"query": "cats", "limit": 3}


def test_queued_tool_call_then_content_after_tool_result(openai_stub: StubHandle) -> None:
    openai_stub.control(tool_calls=[{"name": "lookup", "arguments": {"query": "q", "limit": 1}}])
    c = client(openai_stub)
    first = c.chat.completions.create(model="m", messages=user("go"), tools=[LOOKUP])
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup"
    follow = [*user("go"), {"role": "assistant", "content": None,
                            "tool_calls": [call.model_dump()]},
              {"role": "tool", "tool_call_id": call.id, "content": "found"}]
    second = c.chat.completions.create(model="m", messages=follow, tools=[LOOKUP])
    assert second.choices[0].message.content == "You said: go."


def test_streamed_tool_call(openai_stub: StubHandle) -> None:
    stream = client(openai_stub).chat.completions.create(
        model="m", messages=user("a fairly long message to split"), tools=[SEND_MESSAGE],
        tool_choice="required", stream=True,
    )
    chunks = [c for c in stream if c.choices]
    head = chunks[0].choices[0].delta.tool_calls[0]
    assert head.id and head.function.name == "send_message"
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                   for c in chunks if c.choices[0].delta.tool_calls)
    assert json.loads(args) == {"message": "You said: a fairly long message to split."}
    assert len([c for c in chunks if c.choices[0].delta.tool_calls]) > 2
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# ------------------------------------------------------------------ Responses API


def test_responses_api(openai_stub: StubHandle) -> None:
    c = client(openai_stub)
    resp = c.responses.create(
        model="gpt-5-mini", instructions="name: Bob",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]}],
    )
    assert resp.output_text == "Your name is Bob."
    assert resp.usage is not None and resp.usage.output_tokens == 4


def test_responses_stream_events(openai_stub: StubHandle) -> None:
    events = list(client(openai_stub).responses.create(model="gpt-5-mini", input="hey you",
                                                       stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "You said: hey you."
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "You said: hey you."


def test_responses_function_call(openai_stub: StubHandle) -> None:
    tools = [{"type": "function", "name": "send_message",
              "parameters": SEND_MESSAGE["function"]["parameters"]}]
    events = list(client(openai_stub).responses.create(
        model="gpt-5-mini", input="hi", tools=tools, tool_choice="required", stream=True))
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "send_message"
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"message": "You said: hi."}
    done = events[-1].response.output[0]
    assert done.type == "function_call" and json.loads(done.arguments) == json.loads(args)


# ------------------------------------------------------------------ embeddings


def test_embeddings_deterministic_unit_vectors(openai_stub: StubHandle) -> None:
    c = client(openai_stub)
    a = c.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    b = c.embeddings.create(model="text-embedding-3-small", input="alpha",
                            encoding_format="float")
    assert len(a.data) == 2 and len(a.data[0].embedding) == 1536
    assert a.data[0].embedding == pytest.approx(b.data[0].embedding, abs=1e-6)
    assert a.data[0].embedding != a.data[1].embedding
    assert math.isclose(math.fsum(v * v for v in b.data[0].embedding), 1.0, rel_tol=1e-6)
    assert a.usage.prompt_tokens == 2


def test_embeddings_dimensions_and_base64(openai_stub: StubHandle) -> None:
    c = client(openai_stub)
    small = c.embeddings.create(model="text-embedding-3-small", input="x", dimensions=64)
    assert len(small.data[0].embedding) == 64
    openai_stub.control(embedding_dim=8)
    raw = httpx.post(f"{openai_stub.base_url}/embeddings",
                     json={"model": "m", "input": "x", "encoding_format": "base64"}).json()
    vec = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-5)


# ------------------------------------------------------------------ faults


def test_fault_429_for_next_request_only(openai_stub: StubHandle) -> None:
    openai_stub.control(fault="429", fault_count=1)
    c = client(openai_stub)
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="m", messages=user("x"))
    assert info.value.status_code == 429 and info.value.code == "rate_limit_exceeded"
    assert c.chat.completions.create(model="m", messages=user("x")).choices[0].message.content


def test_fault_500_for_n_requests_then_recovers(openai_stub: StubHandle) -> None:
    openai_stub.control(fault="500", fault_count=3)
    c = client(openai_stub)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="m", messages=user("x"), stream=True)
    assert c.chat.completions.create(model="m", messages=user("x")).choices[0].message.content


def test_fault_always_until_cleared(openai_stub: StubHandle) -> None:
    openai_stub.control(fault="500")
    c = client(openai_stub)
    for _ in range(4):
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="m", messages=user("x"))
    openai_stub.control(fault=None)
    assert c.chat.completions.create(model="m", messages=user("x")).choices[0].message.content


def test_client_retries_consume_the_fault_budget(openai_stub: StubHandle) -> None:
    openai_stub.control(fault="429", fault_count=2)
    c = openai.OpenAI(base_url=openai_stub.base_url, api_key="k", max_retries=2)
    resp = c.chat.completions.create(model="m", messages=user("retry"))
    assert resp.choices[0].message.content == "You said: retry."
    assert len(openai_stub.requests("/v1/chat/completions")) == 3


def test_fault_hang_until_client_gives_up(openai_stub: StubHandle) -> None:
    openai_stub.control(fault="hang", fault_count=1)
    c = client(openai_stub, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="m", messages=user("x"))
    assert 0.4 < time.monotonic() - started < 3
    assert client(openai_stub).chat.completions.create(model="m", messages=user("x")).choices


def test_fault_disconnect_mid_stream(openai_stub: StubHandle) -> None:
    openai_stub.control(fault="disconnect", fault_count=1, disconnect_after_tokens=2)
    stream = client(openai_stub).chat.completions.create(
        model="m", messages=user("one two three four five six"), stream=True)
    received: list[str] = []
    with pytest.raises((httpx.HTTPError, openai.APIError)):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["You", " said:"]


def test_fault_disconnect_non_streaming(openai_stub: StubHandle) -> None:
    openai_stub.control(fault="disconnect", fault_count=1)
    with pytest.raises(openai.APIConnectionError):
        client(openai_stub).chat.completions.create(model="m", messages=user("x"))


def test_fault_empty_completion(openai_stub: StubHandle) -> None:
    openai_stub.control(fault="empty", fault_count=2)
    c = client(openai_stub)
    resp = c.chat.completions.create(model="m", messages=user("x"), tools=[SEND_MESSAGE],
                                     tool_choice="required")
    assert resp.choices[0].message.content == "" and not resp.choices[0].message.tool_calls
    chunks = list(c.chat.completions.create(model="m", messages=user("x"), stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == ""
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_faults_apply_to_responses_but_not_embeddings_by_default(
    openai_stub: StubHandle,
) -> None:
    openai_stub.control(fault="500")
    c = client(openai_stub)
    with pytest.raises(openai.InternalServerError):
        c.responses.create(model="gpt-5-mini", input="x")
    assert c.embeddings.create(model="text-embedding-3-small", input="x").data
    openai_stub.control(fault_paths=["/v1/embeddings"])
    with pytest.raises(openai.InternalServerError):
        c.embeddings.create(model="text-embedding-3-small", input="x")


# ------------------------------------------------------------------ latency


def test_time_to_first_token_and_token_delay(openai_stub: StubHandle) -> None:
    openai_stub.control(ttft_ms=300, token_delay_ms=50)
    started = time.monotonic()
    stream = client(openai_stub).chat.completions.create(
        model="m", messages=user("a b c d e f"), stream=True)
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 8  # "You", " said:", " a" ... " f."
    assert 0.3 <= arrivals[0] < 0.6
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert min(gaps) >= 0.04
    assert arrivals[-1] - arrivals[0] >= 7 * 0.05 - 0.01


def test_latency_applies_to_non_streaming(openai_stub: StubHandle) -> None:
    openai_stub.control(ttft_ms=200, token_delay_ms=20)
    started = time.monotonic()
    client(openai_stub).chat.completions.create(model="m", messages=user("a b"))
    assert time.monotonic() - started >= 0.2 + 3 * 0.02


# ------------------------------------------------------------------ control surface


def test_control_and_requests_endpoints(openai_stub: StubHandle) -> None:
    url = openai_stub.url
    state = httpx.post(f"{url}/_stub/control", json={"ttft_ms": 5, "fault": "500",
                                                     "fault_count": 1}).json()
    assert state["ttft_ms"] == 5 and state["fault"] == "500"
    bad = httpx.post(f"{url}/_stub/control", json={"fault": "teapot"})
    assert bad.status_code == 400
    assert httpx.post(f"{url}/_stub/control", json={"nope": 1}).status_code == 400
    assert httpx.post(f"{url}/_stub/control", content=b"{not json").status_code == 400
    client(openai_stub).embeddings.create(model="text-embedding-3-small", input="logged")
    entries = httpx.get(f"{url}/_stub/requests", params={"path": "/v1/embeddings"}).json()
    assert entries[-1]["body"]["input"] == ["logged"] or entries[-1]["body"]["input"] == "logged"
    reset = httpx.post(f"{url}/_stub/control", json={"reset": True}).json()
    assert reset["fault"] is None and reset["ttft_ms"] == 0
    assert httpx.get(f"{url}/_stub/requests").json() == []


def test_cli_runs_with_fault_flags() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_stub", "--port", str(port),
         "--fault", "500", "--fault-count", "1", "--ttft-ms", "10"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{base}/models", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "stub CLI did not start"
                time.sleep(0.1)
        c = openai.OpenAI(base_url=base, api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="m", messages=user("x"))
        assert c.chat.completions.create(model="m", messages=user("x")).choices[0].message.content
    finally:
        proc.terminate()
        proc.wait(10)


def test_start_openai_stub_config_and_stop() -> None:
    handle = start_openai_stub(port=0, ttft_ms=1, models=["only-model"])
    try:
        assert handle.base_url.endswith("/v1")
        ids = [m.id for m in client(handle).models.list()]
        assert ids == ["only-model"]
    finally:
        handle.stop()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{handle.base_url}/models", timeout=1)
