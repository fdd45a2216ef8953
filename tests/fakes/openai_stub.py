"""An OpenAI-compatible stub server: models, chat completions (SSE, tool calls), embeddings.

Deterministic replies derived from the last user message ("You said: <msg>."), with answers to
"what is my <key>?" looked up in the system prompt ("<key>: value"), so memory tests can assert.
Latency (time to first token, per-token delay) and faults (429, 500, hang, disconnect
mid-stream, empty completion) are injectable for the next N requests or always, through
`POST /_stub/control`, CLI flags, or `StubHandle.control(...)`. `GET /_stub/requests` returns
recent requests. Every response closes its connection: Letta's HTTP pool otherwise reuses a
stale connection and stalls ~60 s.

    python -m tests.fakes.openai_stub --port 8399 --ttft-ms 200 --token-delay-ms 20
    handle = start_openai_stub(port=0, ttft_ms=50); handle.base_url  # http://127.0.0.1:N/v1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import re
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aiohttp import web

DEFAULT_MODELS = ("gpt-5-mini", "gpt-4o-mini", "gpt-4.1-mini", "text-embedding-3-small")
FAULTS = ("429", "500", "hang", "disconnect", "empty")
TERMINAL_TOOLS = ("send_message", "memory_finish_edits")
_TOOL_MARK = re.compile(r"\[\[tool:(?P<name>[\w.-]+)(?P<args>\s*\{.*?\})?\]\]", re.S)
_ASK = re.compile(r"\bwhat(?:'s| is| was)\s+my\s+(?P<key>[a-z][\w -]{0,40}?)\s*\??\s*$", re.I)


@dataclass
class StubConfig:
    """Everything `POST /_stub/control` can set. `fault_count` None means always."""

    ttft_ms: float = 0.0
    token_delay_ms: float = 0.0
    fault: str | None = None
    fault_count: int | None = None
    fault_paths: list[str] = field(
        default_factory=lambda: ["/v1/chat/completions", "/v1/responses"]
    )
    disconnect_after_tokens: int = 2
    reply: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    embedding_dim: int = 1536
    #: answer 400 to a request carrying `stream_options`, as some OpenAI-compatible servers do
    refuse_stream_options: bool = False
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))

    def update(self, data: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(data) - names - {"reset"}
        if unknown:
            raise ValueError(f"unknown control fields: {sorted(unknown)}")
        if data.get("fault") is not None and str(data["fault"]) not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS} or null")
        for key, value in data.items():
            if key == "fault" and value is not None:
                value = str(value)
            if key in names:
                setattr(self, key, value)


class StubState:
    """Configuration plus the request log, shared by the server thread and the test thread."""

    def __init__(self, **config: Any) -> None:
        self.lock = threading.Lock()
        self.config = StubConfig()
        self.config.update(config)
        self.requests: deque[dict[str, Any]] = deque(maxlen=500)
        self.counter = 0

    def control(self, data: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if data.get("reset"):
                self.config = StubConfig()
                self.requests.clear()
            self.config.update(data)
            return asdict(self.config)

    def record(self, request: web.Request, body: Any) -> dict[str, Any]:
        with self.lock:
            self.counter += 1
            entry = {"n": self.counter, "ts": time.time(), "method": request.method,
                     "path": request.path, "body": body}
            self.requests.append(entry)
            return entry

    def take_fault(self, path: str) -> str | None:
        """The fault for this request (consuming one of `fault_count`), or None."""
        with self.lock:
            cfg = self.config
            if cfg.fault is None or path not in cfg.fault_paths:
                return None
            fault = cfg.fault
            if cfg.fault_count is not None:
                cfg.fault_count -= 1
                if cfg.fault_count <= 0:
                    cfg.fault, cfg.fault_count = None, None
            return fault

    def take_tool_call(self) -> dict[str, Any] | None:
        with self.lock:
            return self.config.tool_calls.pop(0) if self.config.tool_calls else None

    def snapshot(self) -> StubConfig:
        with self.lock:
            return StubConfig(**asdict(self.config))


# ---------------------------------------------------------------- reply logic


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def _unwrap_user(text: str) -> str:
    """Letta may pack a user message as JSON {"type": "user_message", "message": ...}."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            return stripped
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return data["message"].strip()
    return stripped


def last_user_message(messages: list[dict[str, Any]]) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            return _unwrap_user(_text_of(msg.get("content")))
    return ""


def system_text(messages: list[dict[str, Any]]) -> str:
    return "\n".join(
        _text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    )


def make_reply(messages: list[dict[str, Any]], fixed: str | None = None) -> str:
    """The deterministic reply: a memory lookup for "what is my X?", else an echo."""
    if fixed is not None:
        return fixed
    user = last_user_message(messages)
    ask = _ASK.search(user)
    if ask:
        key = ask.group("key").strip()
        pattern = re.compile(
            rf"(?:^|[\s\"'(]){re.escape(key)}\s*(?::|=|\bis\b)\s*(?P<v>[^\n.,;\"<]+)", re.I
        )
        found = pattern.search(system_text(messages))
        if found:
            return f"Your {key} is {found.group('v').strip()}."
        return f"I don't know your {key}."
    user = _TOOL_MARK.sub("", user).strip()
    if not user:
        return "Hello! How can I help?"
    return f"You said: {user.rstrip('.!?')}."


def _placeholder(schema: dict[str, Any], text: str) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    return {"string": text, "integer": 0, "number": 0, "boolean": False, "array": [],
            "object": {}}.get(kind or "string", text)


def _arguments_for(tool: dict[str, Any], reply: str) -> dict[str, Any]:
    params = (tool.get("function") or {}).get("parameters") or {}
    props = params.get("properties") or {}
    args: dict[str, Any] = {}
    for name in params.get("required") or []:
        args[name] = _placeholder(props.get(name) or {}, reply)
    if "message" in props:
        args["message"] = reply
    return args


def choose_tool_call(
    body: dict[str, Any], reply: str, queued: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A tool call {"name", "arguments"} for this request, or None for plain content.

    In order: a queued call from /_stub/control; a `[[tool:NAME {json}]]` mark in the last
    user message; a forced tool_choice (a named function, or "required" -> a terminal tool such
    as send_message, else the first tool). After a tool result, plain content is returned unless
    the tool choice forces a call.
    """
    tools = [t for t in body.get("tools") or [] if t.get("type", "function") == "function"]
    if not tools:
        return None
    by_name = {(t.get("function") or {}).get("name"): t for t in tools}
    if queued is not None:
        name = queued.get("name")
        args = queued.get("arguments")
        if args is None and name in by_name:
            args = _arguments_for(by_name[name], reply)
        return {"name": name, "arguments": args or {}}
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "user":
        mark = _TOOL_MARK.search(_text_of(last.get("content")))
        if mark and mark.group("name") in by_name:
            args = json.loads(mark.group("args")) if mark.group("args") else None
            tool = by_name[mark.group("name")]
            return {"name": mark.group("name"), "arguments": args or _arguments_for(tool, reply)}
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name in by_name:
            return {"name": name, "arguments": _arguments_for(by_name[name], reply)}
    if choice in ("required", "any"):
        name = next((n for n in TERMINAL_TOOLS if n in by_name), next(iter(by_name)))
        return {"name": name, "arguments": _arguments_for(by_name[name], reply)}
    return None


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """Map a Responses API request onto the Chat Completions shape the reply logic reads."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items or []:
        kind = item.get("type", "message")
        if kind == "message" or "role" in item:
            messages.append({"role": item.get("role", "user"), "content": item.get("content")})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")}}]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": item.get("output")})
    tools = [
        {"type": "function", "function": {k: t.get(k) for k in ("name", "description",
                                                                  "parameters")}}
        for t in body.get("tools") or [] if t.get("type") == "function"
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("name"):
        choice = {"type": "function", "function": {"name": choice["name"]}}
    return {"messages": messages, "tools": tools, "tool_choice": choice}


def _tokens(text: str) -> list[str]:
    """Split into word-ish tokens that concatenate back to `text`."""
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


def _count_tokens(messages: list[dict[str, Any]]) -> int:
    words = sum(len(_text_of(m.get("content")).split()) for m in messages)
    return max(1, math.ceil(words * 1.3))


def embedding(text: str, dim: int) -> list[float]:
    """A deterministic unit vector derived from sha256 of the text."""
    out: list[float] = []
    block = 0
    while len(out) < dim:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        out.extend((b - 127.5) / 127.5 for b in digest)
        block += 1
    vec = out[:dim]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


# ---------------------------------------------------------------- HTTP


def _error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    resp = web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status=status,
        headers={"Connection": "close"},
    )
    resp.force_close()
    if status == 429:
        resp.headers["Retry-After"] = "0"
    return resp


def _json(data: Any, status: int = 200) -> web.Response:
    resp = web.json_response(data, status=status, headers={"Connection": "close"})
    resp.force_close()
    return resp


async def _hang(request: web.Request) -> web.StreamResponse:
    """Never answer; return once the client has gone (or the server shuts down)."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.05)
    resp = web.Response(status=499)  # nobody reads it: the client has gone
    resp.force_close()
    return resp


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _fault_response(request: web.Request, fault: str) -> web.StreamResponse | None:
    if fault == "429":
        return _error(429, "Rate limit reached (stub)", "requests", "rate_limit_exceeded")
    if fault == "500":
        return _error(500, "The server had an error (stub)", "server_error")
    if fault == "hang":
        return await _hang(request)
    return None


class OpenAIStub:
    """The aiohttp application and its handlers."""

    def __init__(self, state: StubState) -> None:
        self.state = state
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/_stub/control", self.control)
        app.router.add_get("/_stub/control", self.control)
        app.router.add_get("/_stub/requests", self.requests)
        app.router.add_delete("/_stub/requests", self.clear_requests)
        app.router.add_get("/", self.root)
        self.app = app

    async def root(self, request: web.Request) -> web.Response:
        return _json({"ok": True, "stub": "openai"})

    async def models(self, request: web.Request) -> web.Response:
        self.state.record(request, None)
        models = self.state.snapshot().models
        return _json({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "stub"}
            for m in models
        ]})

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self.state.snapshot().models:
            return _error(404, f"The model '{name}' does not exist", "invalid_request_error",
                          "model_not_found")
        return _json({"id": name, "object": "model", "created": 1700000000, "owned_by": "stub"})

    async def control(self, request: web.Request) -> web.Response:
        try:
            data = await request.json() if request.method == "POST" and request.can_read_body \
                else {}
            if not isinstance(data, dict):
                raise ValueError("control body must be a JSON object")
            return _json(self.state.control(data))
        except ValueError as exc:  # also bad JSON (JSONDecodeError is a ValueError)
            return _error(400, str(exc), "invalid_request_error")

    async def requests(self, request: web.Request) -> web.Response:
        with self.state.lock:
            entries = list(self.state.requests)
        path = request.query.get("path")
        if path:
            entries = [e for e in entries if e["path"] == path]
        return _json(entries)

    async def clear_requests(self, request: web.Request) -> web.Response:
        with self.state.lock:
            self.state.requests.clear()
        return _json({"ok": True})

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.state.record(request, body)
        fault = self.state.take_fault(request.path)
        if fault:
            resp = await _fault_response(request, fault)
            if resp is not None:
                return resp
            if fault == "disconnect":
                _abort(request)
                return web.Response(status=500)
        cfg = self.state.snapshot()
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs
                                       and isinstance(inputs[0], int)):
            inputs = [inputs]
        dim = int(body.get("dimensions") or cfg.embedding_dim)
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs or []):
            vec = embedding(item if isinstance(item, str) else json.dumps(item), dim)
            value: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(len(str(x).split()) for x in inputs or [])
        return _json({"object": "list", "data": data, "model": body.get("model"),
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _turn(self, request: web.Request, responses_api: bool) -> Turn | web.StreamResponse:
        """Read, record and plan one completion; a fault response is returned as is."""
        body = await request.json()
        self.state.record(request, body)
        cfg = self.state.snapshot()
        if cfg.refuse_stream_options and "stream_options" in body:
            return _error(400, "Unrecognized request argument supplied: stream_options",
                          "invalid_request_error")
        fault = self.state.take_fault(request.path)
        if fault:
            resp = await _fault_response(request, fault)
            if resp is not None:
                return resp
        chat = responses_to_chat(body) if responses_api else body
        messages = chat.get("messages") or []
        reply = "" if fault == "empty" else make_reply(messages, cfg.reply)
        tool = None if fault == "empty" else choose_tool_call(
            chat, reply, self.state.take_tool_call()
        )
        call = None
        if tool is not None:
            args = tool["arguments"]
            call = ToolCall(f"call_{uuid.uuid4().hex[:24]}", str(tool["name"]),
                            args if isinstance(args, str) else json.dumps(args))
        return Turn(body=body, cfg=cfg, fault=fault, model=body.get("model") or "gpt-5-mini",
                    reply="" if call else reply, call=call,
                    prompt_tokens=_count_tokens(messages))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        turn = await self._turn(request, responses_api=False)
        if not isinstance(turn, Turn):
            return turn
        if turn.body.get("stream"):
            return await self._chat_stream(request, turn)
        if turn.fault == "disconnect":
            await asyncio.sleep(turn.cfg.ttft_ms / 1000)
            _abort(request)
            return web.Response(status=500)
        await asyncio.sleep(turn.total_delay_s)
        message: dict[str, Any] = {"role": "assistant", "refusal": None,
                                   "content": None if turn.call else turn.reply}
        if turn.call:
            message["tool_calls"] = [turn.call.chat()]
        return _json({
            "id": turn.ident("chatcmpl"), "object": "chat.completion", "created": turn.created,
            "model": turn.model, "system_fingerprint": "fp_stub",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if turn.call else "stop"}],
            "usage": turn.chat_usage(),
        })

    async def _chat_stream(self, request: web.Request, turn: Turn) -> web.StreamResponse:
        resp = await _sse(request)
        ident = turn.ident("chatcmpl")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": ident, "object": "chat.completion.chunk", "created": turn.created,
                    "model": turn.model, "system_fingerprint": "fp_stub",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        await asyncio.sleep(turn.cfg.ttft_ms / 1000)
        if turn.call:
            head = {**turn.call.chat(), "index": 0}
            head["function"] = {"name": turn.call.name, "arguments": ""}
            await resp.write(chunk({"role": "assistant", "content": None, "tool_calls": [head]}))
            pieces = turn.pieces()
            finish = "tool_calls"
        else:
            pieces = turn.pieces()
            first = pieces.pop(0) if pieces else ""
            await resp.write(chunk({"role": "assistant", "content": first, "refusal": None}))
            finish = "stop"
        for i, piece in enumerate(pieces):
            if turn.fault == "disconnect" and i + 1 >= turn.cfg.disconnect_after_tokens:
                _abort(request)
                return resp
            await asyncio.sleep(turn.cfg.token_delay_ms / 1000)
            delta = ({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                     if turn.call else {"content": piece})
            await resp.write(chunk(delta))
        if turn.fault == "disconnect":
            _abort(request)
            return resp
        await resp.write(chunk({}, finish))
        if (turn.body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": ident, "object": "chat.completion.chunk", "created": turn.created,
                     "model": turn.model, "system_fingerprint": "fp_stub", "choices": [],
                     "usage": turn.chat_usage()}
            await resp.write(f"data: {json.dumps(usage)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API (Letta uses it for gpt-5* / o-series models)."""
        turn = await self._turn(request, responses_api=True)
        if not isinstance(turn, Turn):
            return turn
        if turn.body.get("stream"):
            return await self._responses_stream(request, turn)
        if turn.fault == "disconnect":
            await asyncio.sleep(turn.cfg.ttft_ms / 1000)
            _abort(request)
            return web.Response(status=500)
        await asyncio.sleep(turn.total_delay_s)
        return _json(turn.response_obj("completed", [turn.output_item("completed")]))

    async def _responses_stream(self, request: web.Request, turn: Turn) -> web.StreamResponse:
        resp = await _sse(request)
        seq = 0

        async def emit(kind: str, **data: Any) -> None:
            nonlocal seq
            event = {"type": kind, "sequence_number": seq, **data}
            seq += 1
            await resp.write(f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode())

        await emit("response.created", response=turn.response_obj("in_progress", []))
        await emit("response.in_progress", response=turn.response_obj("in_progress", []))
        await asyncio.sleep(turn.cfg.ttft_ms / 1000)
        item = turn.output_item("in_progress")
        where = {"item_id": item["id"], "output_index": 0}
        await emit("response.output_item.added", output_index=0, item=item)
        if turn.call is None:
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            await emit("response.content_part.added", content_index=0, part=part, **where)
        for i, piece in enumerate(turn.pieces()):
            if turn.fault == "disconnect" and i >= turn.cfg.disconnect_after_tokens:
                _abort(request)
                return resp
            if i:
                await asyncio.sleep(turn.cfg.token_delay_ms / 1000)
            if turn.call:
                await emit("response.function_call_arguments.delta", delta=piece, **where)
            else:
                await emit("response.output_text.delta", content_index=0, delta=piece,
                           logprobs=[], **where)
        if turn.fault == "disconnect":
            _abort(request)
            return resp
        done = turn.output_item("completed")
        if turn.call:
            await emit("response.function_call_arguments.done", name=turn.call.name,
                       arguments=turn.call.arguments, **where)
        else:
            await emit("response.output_text.done", content_index=0, text=turn.reply,
                       logprobs=[], **where)
            await emit("response.content_part.done", content_index=0,
                       part=done["content"][0], **where)
        await emit("response.output_item.done", output_index=0, item=done)
        await emit("response.completed", response=turn.response_obj("completed", [done]))
        await resp.write_eof()
        return resp


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "Connection": "close",
    })
    resp.force_close()
    await resp.prepare(request)
    return resp


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: str

    def chat(self) -> dict[str, Any]:
        return {"id": self.call_id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Turn:
    """One planned completion: the reply text or a tool call, plus timing and usage."""

    body: dict[str, Any]
    cfg: StubConfig
    fault: str | None
    model: str
    reply: str
    call: ToolCall | None
    prompt_tokens: int
    created: int = field(default_factory=lambda: int(time.time()))
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:24])

    def ident(self, prefix: str) -> str:
        return f"{prefix}-{self.uid}" if prefix == "chatcmpl" else f"{prefix}_{self.uid}"

    def pieces(self) -> list[str]:
        """Streamed pieces: words of the reply, or 16-char slices of the tool arguments."""
        if self.call:
            args = self.call.arguments
            return [args[i:i + 16] for i in range(0, len(args), 16)]
        return _tokens(self.reply)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces()) or (1 if self.call else 0)

    @property
    def total_delay_s(self) -> float:
        extra = max(0, len(self.pieces()) - 1)
        return (self.cfg.ttft_ms + self.cfg.token_delay_ms * extra) / 1000

    def chat_usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def output_item(self, status: str) -> dict[str, Any]:
        if self.call:
            return {"id": self.ident("fc"), "type": "function_call", "status": status,
                    "call_id": self.call.call_id, "name": self.call.name,
                    "arguments": self.call.arguments if status == "completed" else ""}
        text = self.reply if status == "completed" else ""
        content = ([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
                   if status == "completed" else [])
        return {"id": self.ident("msg"), "type": "message", "role": "assistant",
                "status": status, "content": content}

    def response_obj(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        done = status == "completed"
        usage = {"input_tokens": self.prompt_tokens,
                 "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": self.completion_tokens,
                 "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": self.prompt_tokens + self.completion_tokens}
        return {
            "id": self.ident("resp"), "object": "response", "created_at": self.created,
            "status": status, "error": None, "incomplete_details": None,
            "instructions": self.body.get("instructions"), "metadata": {},
            "max_output_tokens": self.body.get("max_output_tokens"), "model": self.model,
            "output": output, "parallel_tool_calls": bool(self.body.get("parallel_tool_calls")),
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "store": False, "temperature": 1.0, "text": {"format": {"type": "text"}},
            "tool_choice": self.body.get("tool_choice") or "auto",
            "tools": self.body.get("tools") or [], "top_p": 1.0, "truncation": "disabled",
            "usage": usage if done else None, "user": self.body.get("user"),
        }


# ---------------------------------------------------------------- running it


class StubHandle:
    """A stub running on a background thread's event loop."""

    def __init__(self, state: StubState, host: str, port: int, thread: threading.Thread,
                 loop: asyncio.AbstractEventLoop, runner: web.AppRunner) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._thread = thread
        self._loop = loop
        self._runner = runner

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (…/v1) to hand to clients and to Letta's OPENAI_BASE_URL."""
        return f"{self.url}/v1"

    def control(self, **settings: Any) -> dict[str, Any]:
        """Set latency/faults/replies (fields of StubConfig; reset=True restores defaults)."""
        return self.state.control(settings)

    def reset(self) -> None:
        self.state.control({"reset": True})

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        with self.state.lock:
            entries = list(self.state.requests)
        return [e for e in entries if path is None or e["path"] == path]

    def clear_requests(self) -> None:
        with self.state.lock:
            self.state.requests.clear()

    def stop(self) -> None:
        if not self._loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            try:
                fut.result(timeout=10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)

    def __enter__(self) -> StubHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_openai_stub(port: int = 0, host: str = "127.0.0.1", **config: Any) -> StubHandle:
    """Start the stub on a background thread; `config` takes StubConfig fields."""
    state = StubState(**config)
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def boot() -> None:
        runner = web.AppRunner(OpenAIStub(state).app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn an ephemeral port
        assert server is not None and server.sockets
        ready["port"] = server.sockets[0].getsockname()[1]
        ready["runner"] = runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(boot())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            ready["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name="openai-stub", daemon=True)
    thread.start()
    started.wait(15)
    if "error" in ready:
        raise RuntimeError(f"openai stub failed to start: {ready['error']}")
    if "port" not in ready:
        raise RuntimeError("openai stub did not start in 15 s")
    return StubHandle(state, host, ready["port"], thread, loop, ready["runner"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8399)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--fault", choices=FAULTS)
    parser.add_argument("--fault-count", type=int, help="only the next N requests (default all)")
    parser.add_argument("--reply", help="a fixed reply instead of the echo")
    parser.add_argument("--embedding-dim", type=int, default=1536)
    parser.add_argument("--refuse-stream-options", action="store_true",
                        help="answer 400 to requests with stream_options")
    args = parser.parse_args(argv)
    state = StubState(ttft_ms=args.ttft_ms, token_delay_ms=args.token_delay_ms,
                      fault=args.fault, fault_count=args.fault_count, reply=args.reply,
                      embedding_dim=args.embedding_dim,
                      refuse_stream_options=args.refuse_stream_options)
    print(f"openai stub on http://{args.host}:{args.port}/v1", flush=True)
    web.run_app(OpenAIStub(state).app, host=args.host, port=args.port, access_log=None,
                print=None, shutdown_timeout=1.0)


if __name__ == "__main__":
    main()
