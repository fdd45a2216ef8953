"""The local LLM server: llama.cpp's OpenAI-compatible HTTP server (xllamacpp) in the foreground.

    python -m agent.local.llm_server [--gguf PATH] [--port 8090] [--host 127.0.0.1]

Serves `/v1/chat/completions` (SSE streaming), `/v1/models` and `/health` on LOCAL_LLM_PORT
until SIGTERM or SIGINT. Defaults come from the voicectl settings (LOCAL_LLM_*); the GGUF
defaults to the bundled gemma-3-270m (assembled into the state directory once).

The bundled model is a *base* model: with its chat template it mostly answers with another
question or a leaked `<|im_end|>`. The `transcript` template (the default for it) lays the
conversation out as `User: …` / `Assistant:` lines and stops at the end of the line, which a
base model continues naturally. An instruct GGUF keeps its own template (`auto`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agent.config import Settings
from agent.config.loading import load_settings
from agent.config.local_mode import LOCAL_LLM_ALIAS
from agent.local import (
    LocalModelError,
    gguf_path,
    is_bundled_gguf,
    threads,
)

TRANSCRIPT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{{ m['content'] + '\\n\\n' }}"
    "{%- elif m['role'] == 'user' -%}{{ 'User: ' + m['content'] + '\\n' }}"
    "{%- elif m['role'] == 'assistant' -%}{{ 'Assistant: ' + m['content'] + '\\n' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)
#: Where a transcript-style reply ends (the model starts the next line or the next speaker).
TRANSCRIPT_STOPS = ["\n", "User:", "Assistant:", "<|im_end|>", "<end_of_turn>"]


def _xllamacpp() -> Any:
    """The xllamacpp module, its OpenMP threads set to wait passively.

    Spinning between tokens would starve the STT and TTS that share the CPU with it.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import xllamacpp

    return xllamacpp


def chat_template_mode(settings: Settings) -> str:
    mode = (settings.local_llm_chat_template or "auto").strip()
    if mode == "auto":
        return "transcript" if is_bundled_gguf(settings) else "model"
    return mode


def server_params(settings: Settings, gguf: Path, host: str, port: int) -> Any:
    """xllamacpp CommonParams for this configuration."""
    params = _xllamacpp().CommonParams()
    params.model.path = str(gguf)
    params.hostnames = [host]
    params.port = port
    params.model_alias = {LOCAL_LLM_ALIAS}  # a set of names
    params.n_parallel = 2  # the filler reply and the main reply may overlap
    params.n_ctx = settings.local_llm_ctx * params.n_parallel
    params.n_predict = settings.local_llm_max_tokens
    n = threads(settings)
    params.cpuparams.n_threads = n
    params.cpuparams_batch.n_threads = n
    params.cpuparams.poll = 0  # no busy-polling between graph runs (see OMP_WAIT_POLICY)
    params.cpuparams_batch.poll = 0
    params.offline = True
    mode = chat_template_mode(settings)
    if mode == "transcript":
        params.use_jinja = True
        params.chat_template = TRANSCRIPT_TEMPLATE
        params.antiprompt = TRANSCRIPT_STOPS
    elif mode != "model":
        params.chat_template = mode
    return params


def serve(settings: Settings, *, gguf: Path | None = None, host: str = "127.0.0.1",
          port: int | None = None, stop: threading.Event | None = None) -> int:
    """Run the server until `stop` is set (or SIGTERM / SIGINT in the main thread)."""
    xllamacpp = _xllamacpp()
    started = time.perf_counter()
    try:
        model = gguf or gguf_path(settings)
    except LocalModelError as exc:
        print(f"llm_server: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    params = server_params(settings, model, host, port or settings.local_llm_port)
    server = xllamacpp.Server(params)
    print(
        f"llm_server: {model.name} on {server.listening_address}/v1 as {LOCAL_LLM_ALIAS!r} "
        f"(template {chat_template_mode(settings)}, {params.cpuparams.n_threads} threads) "
        f"ready in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        del server  # stops the HTTP server and the inference loop
    print("llm_server: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.local.llm_server",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, help="GGUF file (default LOCAL_LLM_GGUF / bundled)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="port (default LOCAL_LLM_PORT)")
    args = parser.parse_args(argv)
    return serve(load_settings(), gguf=args.gguf, host=args.host, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
