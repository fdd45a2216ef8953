"""Spawn, stop and inspect supervised services.

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
from voicectl.supervise.records import (
    ServiceRecord,
    read_record,
    remove_record,
    same_process,
)


def log_path(home: Path, name: str) -> Path:
    return home / "logs" / f"{name}.log"


def process_tree_pids(pid: int) -> set[int]:
    """pid and all its live descendants."""
    try:
        proc = psutil.Process(pid)
        return {pid, *(p.pid for p in proc.children(recursive=True))}
    except psutil.Error:
        return set()


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def collect_tree(root_pid: int) -> list[psutil.Process]:
    """The root, its descendants and the members of its process group."""
    procs: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(root_pid)
        procs[root.pid] = root
        procs.update({p.pid: p for p in root.children(recursive=True)})
    except psutil.Error:
        pass
    procs.update({p.pid: p for p in _group_members(root_pid)})
    procs.pop(os.getpid(), None)
    return list(procs.values())


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an exited orphan waits for init, which may be slow to reap)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes have exited (zombies count as exited); return the living."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        for proc in procs:
            try:
                proc.wait(0)  # reaps our own children
            except (psutil.TimeoutExpired, psutil.Error, ChildProcessError):
                pass
        alive = [p for p in procs if _alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def terminate_tree(root_pid: int, grace: float, sig: int = signal.SIGTERM) -> int:
    """Signal the group and every descendant, wait `grace`, SIGKILL what is left.

    Returns how many processes had to be killed.
    """
    procs = collect_tree(root_pid)
    _signal_all(root_pid, procs, sig)
    alive = {p.pid: p for p in wait_gone(procs, grace)}
    # descendants may have been forked meanwhile: look again
    for proc in collect_tree(root_pid):
        if _alive(proc):
            alive.setdefault(proc.pid, proc)
    if alive:
        _signal_all(root_pid, list(alive.values()), signal.SIGKILL)
        wait_gone(list(alive.values()), 5)
    return len(alive)


def _signal_all(pgid: int, procs: list[psutil.Process], sig: int) -> None:
    """Signal the group once, and each process outside it (a second SIGTERM can mean
    "exit now" to a graceful server such as the livekit-agents worker)."""
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass
    for proc in procs:
        try:
            if os.getpgid(proc.pid) != pgid:
                proc.send_signal(sig)
        except (OSError, psutil.Error):
            pass


def spawn_keeper(settings: Settings, name: str) -> int:
    """Start the keeper of a service, detached; returns its pid."""
    home = settings.home
    log = log_path(home, name)
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
    return same_process(record.keeper_pid, record.keeper_create_time, record.keeper_cmd)


def live_child(record: ServiceRecord) -> psutil.Process | None:
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
    if child is not None and _alive(child):
        terminate_tree(child.pid, grace, sig)
    remove_record(home, name)
    if keeper is None and child is None:
        return False, "was not running (stale pid record removed)"
    pid = record.pid or record.keeper_pid
    return True, f"stopped (pid {pid}) in {time.monotonic() - started:.1f}s"
