"""`python -m agent start`: run the voice agent worker, as LiveKit users run theirs."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Delegate to livekit-agents' runner with this package's worker module."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m agent start [--log-level LEVEL] [--log-format json|colored]")
        return 0 if args else 2
    if args[0] != "start":
        print(f"python -m agent: unknown command {args[0]!r} (expected: start)", file=sys.stderr)
        return 2
    from agent.config import ConfigError
    from agent.config.loading import load_settings

    try:  # a bad setting is one line, before livekit-agents' loader turns it into a traceback
        load_settings()
    except ConfigError as exc:
        print(f"python -m agent: {exc}", file=sys.stderr)
        return 2
    from livekit.agents.__main__ import main as livekit_main

    worker_file = Path(__file__).with_name("worker.py")
    return livekit_main(["start", str(worker_file), *args[1:]])


if __name__ == "__main__":
    sys.exit(main())
