"""Bring services up in dependency order and wait for readiness; bring them down."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from agent.config import Settings
from agent.state_paths import StatePaths
from voicectl.errors import VoicectlError
from voicectl.render.progress import Printer
from voicectl.services.catalog import select
from voicectl.services.spec import ServiceSpec, resolve_executable
from voicectl.supervise.keepers import live_child, live_keeper, spawn_keeper, stop_service
from voicectl.supervise.ports import port_holder
from voicectl.supervise.process_tree import process_tree_pids
from voicectl.supervise.records import read_record, remove_record
from voicectl.supervise.states import KeeperState, ServiceState
from voicectl.supervise.status import service_status

POLL_SECONDS = 0.2
LOG_TAIL_LINES = 15


def stack_lock(home: Path, timeout: float = 600.0) -> FileLock:
    """The lock that keeps two `up`/`down` runs of one project from interleaving."""
    home.mkdir(parents=True, exist_ok=True)
    return FileLock(str(StatePaths(home).stack_lock), timeout=timeout)


def locked(home: Path, printer: Printer) -> FileLock:
    lock = stack_lock(home)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        printer.note("another voicectl up/down is running in this project: waiting for it")
        try:
            lock.acquire()
        except Timeout:
            raise VoicectlError("gave up waiting for the other voicectl up/down") from None
    return lock


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines of a log file."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def _our_pids(home: Path, services: dict[str, ServiceSpec]) -> set[int]:
    pids: set[int] = set()
    for name in services:
        record = read_record(home, name)
        if record is None:
            continue
        for proc in (live_keeper(record), live_child(record)):
            if proc is not None:
                pids |= process_tree_pids(proc.pid)
    return pids


def check_ports(home: Path, services: dict[str, ServiceSpec], names: list[str]) -> None:
    """Refuse to start when a port a service needs is held by a process that is not ours."""
    ours = _our_pids(home, services)
    for name in names:
        for port in services[name].ports:
            holder = port_holder(port)
            if holder is None or (holder.pid is not None and holder.pid in ours):
                continue
            raise VoicectlError(
                f"cannot start {name}: {holder.describe()}, not by voicectl; "
                "stop it or configure another port"
            )


@dataclass
class _Pending:
    spec: ServiceSpec
    started: float
    launched: bool


def up(settings: Settings, services: dict[str, ServiceSpec], names: list[str],
       printer: Printer) -> None:
    """Start the named services and their dependencies, wait until each is ready."""
    names = select(services, names, with_deps=True)
    home = settings.home
    with locked(home, printer):
        to_start: list[str] = []
        ready: set[str] = set()
        for name in names:
            spec = services[name]
            st = service_status(spec, read_record(home, name))
            if st.state == ServiceState.RUNNING:
                printer.ready(name, f"already running ({st.health})", 0.0)
                ready.add(name)
            elif st.state == ServiceState.STARTING and not spec.external:
                to_start.append(name)  # wait for it, do not start it twice
            else:
                if st.state in (ServiceState.CRASHED, ServiceState.STOPPED) and not spec.external:
                    remove_record(home, name)
                to_start.append(name)
        launch = [n for n in to_start if not services[n].external and read_record(home, n) is None]
        for name in launch:
            resolve_executable(services[name])
        check_ports(home, services, launch)
        _start_in_order(settings, services, to_start, set(launch), ready, printer)


def _start_in_order(settings: Settings, services: dict[str, ServiceSpec], to_start: list[str],
                    launch: set[str], ready: set[str], printer: Printer) -> None:
    waiting: dict[str, _Pending] = {}
    queue = deque(to_start)
    while queue or waiting:
        for name in list(queue):
            spec = services[name]
            if any(dep in services and dep not in ready for dep in spec.depends_on):
                blocked = [d for d in spec.depends_on if d in services and d not in ready]
                printer.state(name, f"waiting for {', '.join(blocked)}")
                continue
            queue.remove(name)
            if spec.prepare is not None and name in launch:
                spec.prepare(lambda msg, n=name: printer.state(n, msg))
            if name in launch:
                if spec.server is not None:  # say which LiveKit server runs, and why
                    printer.note(f"{name}: {spec.server.describe()}")
                spawn_keeper(settings, name)
                printer.state(name, ServiceState.STARTING)
            else:
                printer.state(name, "waiting until ready")
            waiting[name] = _Pending(spec, time.monotonic(), name in launch)
        for name, pending in list(waiting.items()):
            if _check_ready(settings, pending, printer):
                ready.add(name)
                del waiting[name]
        if waiting or queue:
            time.sleep(POLL_SECONDS)


def _check_ready(settings: Settings, pending: _Pending, printer: Printer) -> bool:
    """True when ready; raises with the reason and log tail when it cannot become ready."""
    spec = pending.spec
    home = settings.home
    elapsed = time.monotonic() - pending.started
    record = None if spec.external else read_record(home, spec.name)
    if record is not None and record.state in (KeeperState.BACKOFF, KeeperState.CRASHED):
        _fail(settings, spec, record.reason or "exited during start", pending.launched)
    child = live_child(record) if record else None
    result = spec.probe(child.pid if child else None, record.started_at if record else 0.0)
    if result.ok:
        printer.ready(spec.name, result.detail, elapsed)
        return True
    if elapsed > spec.start_timeout:
        _fail(settings, spec, f"not ready after {spec.start_timeout:g}s: {result.detail}",
              pending.launched)
    printer.state(spec.name, result.detail)
    return False


def _fail(settings: Settings, spec: ServiceSpec, reason: str, launched: bool) -> None:
    lines = [] if spec.external else tail(settings.paths.log(spec.name))
    if launched:
        stop_service(settings.home, spec.name, settings.stop_grace_seconds, spec.stop_signal)
    raise StartError(spec.name, reason, lines)


class StartError(VoicectlError):
    """A service that did not become ready; carries its last log lines."""

    def __init__(self, name: str, reason: str, log_lines: list[str]) -> None:
        super().__init__(f"{name} failed to start: {reason}")
        self.service = name
        self.log_lines = log_lines


def down(settings: Settings, names: list[str], printer: Printer,
         services: dict[str, ServiceSpec]) -> None:
    """Stop the named services, dependants first."""
    with locked(settings.home, printer):
        for name in reversed(names):
            if services[name].external:
                continue
            was_running, detail = stop_service(
                settings.home, name, settings.stop_grace_seconds, services[name].stop_signal
            )
            printer.stopped(name, detail, was_running)
