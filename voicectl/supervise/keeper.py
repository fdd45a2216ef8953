"""The keeper of one service: runs it, restarts it with backoff, keeps its pid record.

Run as `python -m voicectl.supervise.keeper NAME` by `voicectl up`, detached, with stdout and stderr
on the service's log file (the service inherits them). When to restart and when to give up is
the RestartPolicy's decision; the keeper takes the spawn function and the clock as parameters
(real ones by default) so that its loop can run against fakes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psutil

from agent.config import Settings
from agent.config.loading import load_settings
from voicectl.services.catalog import build_services
from voicectl.services.spec import ServiceSpec, child_env
from voicectl.supervise.policy import RestartPolicy
from voicectl.supervise.process_tree import terminate_tree
from voicectl.supervise.records import ServiceRecord, identify, remove_record, write_record
from voicectl.supervise.states import KeeperState


class Child(Protocol):
    """A started service process, as the keeper uses it."""

    pid: int
    create_time: float
    cmd: list[str]

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""

    def stop(self, grace: float, sig: int = signal.SIGTERM) -> int:
        """Stop it and everything it started; return how many had to be killed."""


Spawn = Callable[[ServiceSpec, Settings], Child]
Clock = Callable[[], float]


@dataclass
class ServiceProcess:
    """A real service process, in a session (and process group) of its own."""

    popen: psutil.Popen
    pid: int
    create_time: float
    cmd: list[str]

    def poll(self) -> int | None:
        return self.popen.poll()

    def stop(self, grace: float, sig: int = signal.SIGTERM) -> int:
        return terminate_tree(self.pid, grace, sig)


def spawn_service(spec: ServiceSpec, settings: Settings) -> ServiceProcess:
    """Start the service's command; raises OSError when it cannot be started."""
    assert spec.argv is not None, f"{spec.name} is external: nothing to start"
    kwargs = spec.spawn_kwargs() if spec.spawn_kwargs else {}
    proc = psutil.Popen(
        spec.argv,
        env=child_env(settings, spec),
        cwd=str(spec.cwd or settings.project_dir),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **kwargs,
    )
    return ServiceProcess(proc, *identify(proc))


class Keeper:
    """Supervises one service process."""

    def __init__(self, spec: ServiceSpec, settings: Settings, *,
                 spawn: Spawn = spawn_service, clock: Clock = time.time) -> None:
        self.spec = spec
        self.settings = settings
        self.home = settings.home
        self.policy = RestartPolicy.from_settings(settings)
        self.spawn = spawn
        self.clock = clock
        self.child: Child | None = None
        self.stop_requested = threading.Event()
        pid, ctime, cmd = identify(psutil.Process())
        self.record = ServiceRecord(
            name=spec.name,
            keeper_pid=pid,
            keeper_create_time=ctime,
            keeper_cmd=cmd,
            ports=list(spec.ports),
            supervised_since=clock(),
        )

    def say(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"[voicectl {stamp}] {self.spec.name}: {message}", flush=True)

    def _start(self) -> Child:
        child = self.spawn(self.spec, self.settings)
        self.child = child
        self.record.pid, self.record.create_time, self.record.cmd = (
            child.pid, child.create_time, child.cmd)
        self.record.started_at = self.clock()
        self.record.state = KeeperState.RUNNING
        self.record.reason = ""
        write_record(self.home, self.record)
        self.say(f"started pid {child.pid}: {' '.join(self.spec.argv or [])}")
        return child

    def _wait(self, child: Child) -> int | None:
        """Exit code of the process, or None when a stop was requested first."""
        while not self.stop_requested.is_set():
            code = child.poll()
            if code is not None:
                return code
            self.stop_requested.wait(0.2)
        return None

    def run(self) -> int:
        crashes_in_row = 0
        while not self.stop_requested.is_set():
            try:
                child = self._start()
            except OSError as exc:
                argv0 = self.spec.argv[0] if self.spec.argv else self.spec.name
                return self._give_up(f"cannot start {argv0!r}: {exc}", None)
            code = self._wait(child)
            if code is None:
                break
            lived = self.clock() - self.record.started_at
            child.stop(2.0)  # leftovers of the crashed run (job processes)
            self.record.last_exit_code = code
            self.say(f"exited with code {code} after {lived:.1f}s")
            decision = self.policy.after_exit(lived, code, crashes_in_row)
            crashes_in_row = decision.crashes_in_row
            if decision.delay is None:
                return self._give_up(decision.reason, code)
            self.record.state = KeeperState.BACKOFF
            self.record.reason = decision.reason
            write_record(self.home, self.record)
            self.say(self.record.reason)
            if self.stop_requested.wait(decision.delay):
                break
            self.record.restarts += 1
        self.record.state = KeeperState.STOPPING
        write_record(self.home, self.record)
        if self.child is not None:
            killed = self.child.stop(self.settings.stop_grace_seconds, self.spec.stop_signal)
            if killed:
                self.say(f"{killed} process(es) did not stop on SIGTERM: killed")
        remove_record(self.home, self.spec.name)
        self.say("stopped")
        return 0

    def _give_up(self, reason: str, code: int | None) -> int:
        self.record.state = KeeperState.CRASHED
        self.record.reason = reason
        self.record.last_exit_code = code
        write_record(self.home, self.record)
        self.say(reason)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = load_settings()
    spec = build_services(settings)[args[0]]
    keeper = Keeper(spec, settings)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: keeper.stop_requested.set())
    return keeper.run()


if __name__ == "__main__":
    sys.exit(main())
