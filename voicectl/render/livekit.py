"""`dispatch`, `token` and `install livekit` for people: one plain line per fact."""

from __future__ import annotations

import sys
from collections.abc import Callable


def dispatch_list(rows: list[dict], room: str) -> None:
    """The room's dispatches, one a line."""
    for r in rows:
        sys.stdout.write(f"{r['dispatch_id']}  {r['agent_name']}  jobs={r['jobs']}  "
                         f"{r['metadata']}\n")
    if not rows:
        sys.stdout.write(f"no dispatches in room {room}\n")


def dispatch_deleted(dispatch_id: str) -> None:
    sys.stdout.write(f"deleted dispatch {dispatch_id}\n")


def dispatched(result: dict, waited: bool) -> None:
    """Where the agent was sent and, when waited for, that a worker accepted the job."""
    existed = "existing room" if result["room_existed"] else (
        "new room (created)" if result["room_created"] else "room did not exist yet")
    sys.stdout.write(f"dispatched {result['agent_name']} to {result['room']} "
                     f"({existed}): {result['dispatch_id']}\n")
    if waited and result["accepted"]:
        sys.stdout.write("worker accepted the job\n")


def join_token(result: dict) -> None:
    """The bare token, so that `$(voicectl token ...)` works."""
    sys.stdout.write(result["token"] + "\n")


def byte_progress(label: str) -> Callable[[int, int | None], None]:
    """A progress callback redrawing one stderr line, at most once per MiB."""
    last = [-1]

    def show(done: int, total: int | None) -> None:
        if done // 2**20 == last[0] and done != total:
            return
        last[0] = done // 2**20
        of = f" / {total / 2**20:.1f}" if total else ""
        sys.stderr.write(f"\r… {label} {done / 2**20:.1f}{of} MiB")
        sys.stderr.flush()

    return show


def byte_progress_end() -> None:
    """Leave the redrawn progress line."""
    sys.stderr.write("\n")


def livekit_installed(report: dict) -> None:
    already = "" if report["downloaded"] else "already "
    sys.stdout.write(f"✓ livekit-server {report['version']} {already}installed at "
                     f"{report['path']}\n")
