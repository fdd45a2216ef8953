"""A process and everything it started: find the tree, signal it, wait until it is gone.

A service runs in a process group of its own, but its descendants may leave the group (or be
reparented): the tree is the root, its descendants and the members of its group.
"""

from __future__ import annotations

import os
import signal
import time

import psutil


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


def alive(proc: psutil.Process) -> bool:
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
        living = [p for p in procs if alive(p)]
        if not living or time.monotonic() >= deadline:
            return living
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def terminate_tree(root_pid: int, grace: float, sig: int = signal.SIGTERM) -> int:
    """Signal the group and every descendant, wait `grace`, SIGKILL what is left.

    Returns how many processes had to be killed.
    """
    procs = collect_tree(root_pid)
    _signal_all(root_pid, procs, sig)
    living = {p.pid: p for p in wait_gone(procs, grace)}
    # descendants may have been forked meanwhile: look again
    for proc in collect_tree(root_pid):
        if alive(proc):
            living.setdefault(proc.pid, proc)
    if living:
        _signal_all(root_pid, list(living.values()), signal.SIGKILL)
        wait_gone(list(living.values()), 5)
    return len(living)


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
