"""The keeper of one service: runs it, restarts it with backoff, keeps its pid record.

Run as `python -m voicectl.supervise.keeper NAME` by `voicectl up`, detached, with stdout and stderr
on the service's log file (the service inherits them). Judges a run by how long it lived, not
by its exit code: the LiveKit worker exits 0 when it gives up on the server.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import psutil

from agent.config import Settings, load_settings
from voicectl.services.catalog import ServiceSpec, build_services, child_env
from voicectl.supervise.processes import terminate_tree
from voicectl.supervise.records import ServiceRecord, identify, remove_record, write_record


class Keeper:
    """Supervises one service process."""

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.home = settings.home
        self.stop_requested = threading.Event()
        pid, ctime, cmd = identify(psutil.Process())
        self.record = ServiceRecord(
            name=spec.name,
            keeper_pid=pid,
            keeper_create_time=ctime,
            keeper_cmd=cmd,
            ports=list(spec.ports),
            supervised_since=time.time(),
        )

    def say(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"[voicectl {stamp}] {self.spec.name}: {message}", flush=True)

    def _spawn(self) -> psutil.Popen:
        kwargs = self.spec.spawn_kwargs() if self.spec.spawn_kwargs else {}
        proc = psutil.Popen(
            self.spec.argv,
            env=child_env(self.settings, self.spec),
            cwd=str(self.spec.cwd or self.settings.project_dir),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,
        )
        pid, ctime, cmd = identify(proc)
        self.record.pid, self.record.create_time, self.record.cmd = pid, ctime, cmd
        self.record.started_at = time.time()
        self.record.state = "running"
        self.record.reason = ""
        write_record(self.home, self.record)
        self.say(f"started pid {pid}: {' '.join(self.spec.argv)}")
        return proc

    def _wait(self, proc: psutil.Popen) -> int | None:
        """Exit code of the process, or None when a stop was requested first."""
        while not self.stop_requested.is_set():
            code = proc.poll()
            if code is not None:
                return code
            self.stop_requested.wait(0.2)
        return None

    def run(self) -> int:
        s = self.settings
        fast_crashes = 0
        while not self.stop_requested.is_set():
            try:
                proc = self._spawn()
            except OSError as exc:
                return self._give_up(f"cannot start {self.spec.argv[0]!r}: {exc}", None)
            code = self._wait(proc)
            if code is None:
                break
            lived = time.time() - self.record.started_at
            terminate_tree(proc.pid, 2.0)  # leftovers of the crashed run (job processes)
            self.record.last_exit_code = code
            self.say(f"exited with code {code} after {lived:.1f}s")
            fast_crashes = fast_crashes + 1 if lived < s.restart_fast_crash_seconds else 1
            if fast_crashes >= s.restart_max_fast_crashes:
                return self._give_up(
                    f"crashed {fast_crashes} times in a row, each within "
                    f"{s.restart_fast_crash_seconds:g}s of starting (last exit code {code}); "
                    "gave up restarting",
                    code,
                )
            delay = min(s.restart_backoff_seconds * 2 ** (fast_crashes - 1), 60.0)
            self.record.state = "backoff"
            self.record.reason = f"exited with code {code}; restarting in {delay:.1f}s"
            write_record(self.home, self.record)
            self.say(self.record.reason)
            if self.stop_requested.wait(delay):
                break
            self.record.restarts += 1
        self.record.state = "stopping"
        write_record(self.home, self.record)
        if self.record.pid:
            killed = terminate_tree(self.record.pid, s.stop_grace_seconds, self.spec.stop_signal)
            if killed:
                self.say(f"{killed} process(es) did not stop on SIGTERM: killed")
        remove_record(self.home, self.spec.name)
        self.say("stopped")
        return 0

    def _give_up(self, reason: str, code: int | None) -> int:
        self.record.state = "crashed"
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
