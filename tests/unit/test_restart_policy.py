"""The keeper's restart policy (a pure decision) and the keeper's loop run against a fake spawn
and a fake clock: no real service process, no waiting for real backoff."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.config import Settings
from voicectl.services.probes import ProbeResult
from voicectl.services.spec import ServiceSpec
from voicectl.supervise.keeper import Keeper
from voicectl.supervise.policy import RestartPolicy
from voicectl.supervise.records import read_record
from voicectl.supervise.states import KeeperState

RUNS_UNTIL_STOPPED = -1.0
GIVE_UP = ("crashed 3 times in a row, each within 10s of starting (last exit code 1); "
           "gave up restarting")


def policy(**kw: float) -> RestartPolicy:
    return RestartPolicy(**{"backoff_seconds": 1.0, "fast_crash_seconds": 10.0,
                            "max_fast_crashes": 5, **kw})


def test_backoff_doubles_with_each_fast_crash() -> None:
    p, crashes, delays = policy(), 0, []
    for _ in range(4):
        decision = p.after_exit(lived=0.5, exit_code=1, crashes_in_row=crashes)
        crashes = decision.crashes_in_row
        delays.append(decision.delay)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert decision.reason == "exited with code 1; restarting in 8.0s"
    assert not decision.give_up


def test_backoff_is_capped_at_sixty_seconds() -> None:
    p = policy(backoff_seconds=10.0, max_fast_crashes=100)
    assert p.after_exit(0.5, 1, crashes_in_row=5).delay == 60.0
    assert p.after_exit(0.5, 1, crashes_in_row=3).delay == 60.0  # 10 * 2**3 = 80
    assert policy(max_delay=5.0).after_exit(0.5, 1, crashes_in_row=3).delay == 5.0


def test_gives_up_after_max_fast_crashes() -> None:
    p = policy(max_fast_crashes=3)
    assert p.after_exit(0.5, 1, crashes_in_row=1).delay == 2.0
    decision = p.after_exit(0.5, 1, crashes_in_row=2)
    assert decision.give_up and decision.delay is None
    assert decision.crashes_in_row == 3
    assert decision.reason == GIVE_UP


def test_a_slow_crash_starts_the_count_again() -> None:
    p = policy(max_fast_crashes=3)
    decision = p.after_exit(lived=30.0, exit_code=0, crashes_in_row=2)
    assert decision.crashes_in_row == 1 and decision.delay == 1.0
    assert decision.reason == "exited with code 0; restarting in 1.0s"


def test_built_from_settings() -> None:
    s = Settings(restart_backoff_seconds=0.5, restart_fast_crash_seconds=3.0,
                 restart_max_fast_crashes=7)
    assert RestartPolicy.from_settings(s) == RestartPolicy(0.5, 3.0, 7, 60.0)


# ------------------------------------------------------------------ the keeper, with fakes


@dataclass
class FakeChild:
    """A run that lives `lifetime` seconds of the fake clock, then exits with `code`."""

    pid: int
    clock: FakeClock
    lifetime: float
    code: int = 1
    create_time: float = 0.0
    cmd: list[str] = field(default_factory=lambda: ["fake-service"])
    stops: list[tuple[float, int]] = field(default_factory=list)

    on_running: Callable[[], object] | None = None

    def poll(self) -> int | None:
        if self.lifetime == RUNS_UNTIL_STOPPED:
            if self.on_running is not None:
                self.on_running()
            return None
        self.clock.now += self.lifetime
        return self.code

    def stop(self, grace: float, sig: int = signal.SIGTERM) -> int:
        self.stops.append((grace, sig))
        return 0


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSpawn:
    """Hands out one FakeChild per start, and notes the record as each start found it."""

    def __init__(self, home: Path, clock: FakeClock, lifetimes: list[float]) -> None:
        self.home, self.clock, self.lifetimes = home, clock, list(lifetimes)
        self.children: list[FakeChild] = []
        self.on_running: Callable[[], object] | None = None
        self.records_seen: list[tuple[str, str]] = []

    def __call__(self, spec: ServiceSpec, settings: Settings) -> FakeChild:
        record = read_record(self.home, spec.name)
        if record is not None:
            self.records_seen.append((record.state, record.reason))
        child = FakeChild(pid=40000 + len(self.children), clock=self.clock,
                          lifetime=self.lifetimes.pop(0), on_running=self.on_running)
        self.children.append(child)
        return child


def _keeper(tmp_path: Path, lifetimes: list[float]) -> tuple[Keeper, FakeSpawn]:
    settings = Settings(voicectl_home=str(tmp_path), restart_backoff_seconds=0.001,
                        restart_fast_crash_seconds=10.0, restart_max_fast_crashes=3,
                        stop_grace_seconds=4.0)
    spec = ServiceSpec(name="svc", argv=["fake-service"],
                       probe=lambda _pid, _since: ProbeResult(True, "fake"))
    clock = FakeClock()
    spawn = FakeSpawn(settings.home, clock, lifetimes)
    return Keeper(spec, settings, spawn=spawn, clock=clock), spawn


def test_keeper_restarts_then_gives_up(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    keeper, spawn = _keeper(tmp_path, [1.0, 2.0, 3.0])
    assert keeper.run() == 1
    assert len(spawn.children) == 3
    assert spawn.records_seen == [
        (KeeperState.BACKOFF, "exited with code 1; restarting in 0.0s"),
        (KeeperState.BACKOFF, "exited with code 1; restarting in 0.0s"),
    ]
    assert all(child.stops == [(2.0, signal.SIGTERM)] for child in spawn.children)
    data = json.loads((tmp_path / "run" / "svc.json").read_text())
    assert data["state"] == "crashed" and data["reason"] == GIVE_UP
    assert data["restarts"] == 2 and data["last_exit_code"] == 1
    assert data["pid"] == spawn.children[-1].pid and data["cmd"] == ["fake-service"]
    assert data["started_at"] == 1000.0 + 1.0 + 2.0  # the fake clock at the third start
    out = capsys.readouterr().out
    assert "svc: exited with code 1 after 3.0s" in out and out.rstrip().endswith(GIVE_UP)


def test_keeper_slow_crash_resets_the_count(tmp_path: Path) -> None:
    keeper, spawn = _keeper(tmp_path, [1.0, 60.0, 1.0, 1.0])
    assert keeper.run() == 1
    assert len(spawn.children) == 4  # the slow crash earned one more run before giving up
    assert read_record(tmp_path, "svc").restarts == 3


def test_keeper_stop_stops_the_child_and_removes_the_record(tmp_path: Path) -> None:
    keeper, spawn = _keeper(tmp_path, [RUNS_UNTIL_STOPPED])
    spawn.on_running = keeper.stop_requested.set  # as SIGTERM does
    assert keeper.run() == 0
    assert spawn.children[0].stops == [(4.0, signal.SIGTERM)]  # stop grace, the spec's signal
    assert read_record(tmp_path, "svc") is None
