"""A stand-in service for control-plane tests: an HTTP server with scripted misbehaviour.

    python tests/fakes/standin.py --port N [--body OK] [--health-path /] [--crash-file F]
        [--crash-after S] [--exit-code C] [--children K] [--stubborn-child]

- answers GET on every path with 200 and --body (JSON health for paths under /v1/health);
- exits with --exit-code when --crash-file appears (it is removed: one crash), while
  --crash-always-file exists (also at start: a crash loop), or --crash-after seconds in;
- spawns --children sleeping children, each with a grandchild; --stubborn-child adds a
  child that ignores SIGTERM (so stopping must escalate to SIGKILL).
Child pids are printed as `child <pid>` lines for the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SLEEPER = "import time\nwhile True: time.sleep(1)"
GRANDPARENT = (
    "import subprocess, sys, time\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)'])\n"
    "print('child', p.pid, flush=True)\n"
    "while True: time.sleep(1)\n"
)
STUBBORN = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLEEPER


def _handler(body: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/v1/health"):
                payload = json.dumps({"version": "standin", "status": "ok"}).encode()
            else:
                payload = body.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def _crash(args: argparse.Namespace, why: str) -> None:
    print(f"standin: {why}, exiting {args.exit_code}", flush=True)
    os._exit(args.exit_code)


def _watch(args: argparse.Namespace) -> None:
    started = time.monotonic()
    while True:
        if args.crash_file and Path(args.crash_file).exists():
            Path(args.crash_file).unlink(missing_ok=True)
            _crash(args, "crash file found")
        if args.crash_always_file and Path(args.crash_always_file).exists():
            _crash(args, "crash-always file present")
        if args.crash_after is not None and time.monotonic() - started > args.crash_after:
            _crash(args, "crash-after reached")
        time.sleep(0.05)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--body", default="OK")
    p.add_argument("--crash-file")
    p.add_argument("--crash-always-file")
    p.add_argument("--crash-after", type=float)
    p.add_argument("--exit-code", type=int, default=3)
    p.add_argument("--children", type=int, default=0)
    p.add_argument("--stubborn-child", action="store_true")
    args = p.parse_args()
    if args.crash_always_file and Path(args.crash_always_file).exists():
        _crash(args, "crash-always file present at start")
    for _ in range(args.children):
        child = subprocess.Popen([sys.executable, "-c", GRANDPARENT])
        print("child", child.pid, flush=True)
    if args.stubborn_child:
        child = subprocess.Popen([sys.executable, "-c", STUBBORN])
        print("child", child.pid, flush=True)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(args.body))
    threading.Thread(target=_watch, args=(args,), daemon=True).start()
    print(f"standin listening on {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
