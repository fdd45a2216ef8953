"""What a service is (ServiceSpec), and what every service shares: finding its program and
building its environment."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Settings
from voicectl.errors import VoicectlError
from voicectl.livekit.choice import LiveKitChoice
from voicectl.services.probes import ProbeResult

#: Probe signature: (pid of the running process or None, its start time) -> result.
Probe = Callable[[int | None, float], ProbeResult]
#: Work before a start (install, initialise), reporting progress lines.
Prepare = Callable[[Callable[[str], None]], None]


@dataclass
class ServiceSpec:
    """One service of the stack. `argv` None means external: probed, never started."""

    name: str
    argv: list[str] | None
    probe: Probe
    url: str = ""
    ports: list[int] = field(default_factory=list)
    depends_on: tuple[str, ...] = ()
    start_timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    prepare: Prepare | None = None
    spawn_kwargs: Callable[[], dict] | None = None  # extra Popen arguments (user, group)
    stop_signal: int = signal.SIGTERM
    server: LiveKitChoice | None = None  # which LiveKit server this is (livekit only)

    @property
    def external(self) -> bool:
        return self.argv is None


def resolve_executable(spec: ServiceSpec) -> None:
    """Fail early, in one line, when a service's program cannot be found."""
    if spec.argv is None:
        return
    if spec.server is not None and spec.server.problem:
        raise VoicectlError(f"{spec.name}: {spec.server.problem}")
    program = spec.argv[0]
    if os.sep in program:
        if not os.access(program, os.X_OK):
            raise VoicectlError(f"{spec.name}: {program} is not an executable file")
        return
    if shutil.which(program) is None:
        hint = f"set VOICECTL_{spec.name.upper()}_CMD"
        raise VoicectlError(f"{spec.name}: {program!r} not found on PATH; {hint}")


def child_env(settings: Settings, spec: ServiceSpec) -> dict[str, str]:
    """Environment of a service process: ours, the effective settings, the spec's own."""
    env = dict(os.environ)
    env.update({k: v for k, v in settings.env_for_children().items() if v})
    env.update(spec.env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
