"""Start, find and stop the keepers of services.

Each service runs under a keeper (`python -m voicectl.supervise.keeper`), started detached in a
session of its own; the keeper starts the service in a new process group, restarts it with
backoff and keeps its pid record. Stopping signals the keeper, which stops the whole group; when
the keeper is gone, the group and every descendant are stopped from here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from agent.config import Settings
from voicectl.supervise.process_tree import alive, terminate_tree, wait_gone
from voicectl.supervise.records import (
    ServiceRecord,
    read_record,
    remove_record,
    same_process,
)


def spawn_keeper(settings: Settings, name: str) -> int:
    """Start the keeper of a service, detached, its output on the service's log; returns its
    pid."""
    home = settings.home
    log = settings.paths.log(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["VOICECTL_HOME"] = str(home)
    if settings.env_file is not None:
        env["VOICECTL_ENV_FILE"] = str(settings.env_file)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicectl.supervise.keeper", name],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(settings.project_dir),
            close_fds=True,
        )
    return proc.pid


def live_keeper(record: ServiceRecord) -> psutil.Process | None:
    """The record's keeper, when it is still the process the record names."""
    return same_process(record.keeper_pid, record.keeper_create_time, record.keeper_cmd)


def live_child(record: ServiceRecord) -> psutil.Process | None:
    """The record's service process, when it is still the process the record names."""
    return same_process(record.pid, record.create_time, record.cmd)


def stop_service(home: Path, name: str, grace: float, sig: int = signal.SIGTERM
                 ) -> tuple[bool, str]:
    """Stop a service and everything it started. Returns (was_running, detail)."""
    record = read_record(home, name)
    if record is None:
        return False, "not running"
    keeper = live_keeper(record)
    child = live_child(record)
    started = time.monotonic()
    if keeper is not None:
        keeper.send_signal(signal.SIGTERM)
        if wait_gone([keeper], grace + 10):
            terminate_tree(keeper.pid, 0)
    if child is not None and alive(child):
        terminate_tree(child.pid, grace, sig)
    remove_record(home, name)
    if keeper is None and child is None:
        return False, "was not running (stale pid record removed)"
    pid = record.pid or record.keeper_pid
    return True, f"stopped (pid {pid}) in {time.monotonic() - started:.1f}s"
