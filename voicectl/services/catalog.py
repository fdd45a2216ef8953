"""What each service is: its command, ports, readiness probe and dependencies."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Settings
from agent.events import find_since
from voicectl.errors import UsageError, VoicectlError
from voicectl.livekit.choice import LiveKitChoice
from voicectl.livekit.choice import choose as choose_livekit
from voicectl.services.probes import ProbeResult, probe_letta, probe_text, probe_worker

#: Probe signature: (pid of the running process or None, its start time) -> result.
Probe = Callable[[int | None, float], ProbeResult]
Prepare = Callable[[Callable[[str], None]], None]

SERVICE_ORDER = ("llm", "embeddings", "livekit", "postgres", "letta", "agent", "web")


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


def command_override(settings: Settings, name: str) -> list[str] | None:
    """The `VOICECTL_<NAME>_CMD` override, split as a shell splits words."""
    raw = getattr(settings, f"voicectl_{name}_cmd", "")
    if not raw.strip():
        return None
    try:
        argv = shlex.split(raw)
    except ValueError as exc:
        raise UsageError(f"VOICECTL_{name.upper()}_CMD cannot be split: {exc}") from None
    return argv


def _livekit(settings: Settings) -> ServiceSpec:
    choice = choose_livekit(settings)
    spec = ServiceSpec(
        name="livekit",
        argv=choice.argv,
        url=settings.livekit_url,
        probe=lambda _pid, _since: probe_text(settings.livekit_http_url + "/", "OK"),
        start_timeout=30.0,
        env=dict(choice.env),
        server=choice,
    )
    if not spec.external:
        spec.ports = [settings.livekit_port]
    return spec


def _letta(settings: Settings) -> ServiceSpec:
    argv = command_override(settings, "letta")
    spec = ServiceSpec(
        name="letta",
        argv=argv,
        url=settings.letta_server_url,
        probe=lambda _pid, _since: probe_letta(settings.letta_server_url, settings.letta_api_key),
        start_timeout=120.0,
    )
    if argv is not None:
        spec.ports = [settings.letta_port]
    elif settings.letta_managed:
        from voicectl.letta import managed as managed_letta

        managed_letta.configure_letta(spec, settings)
    return spec


def _agent(settings: Settings) -> ServiceSpec:
    argv = command_override(settings, "agent") or [sys.executable, "-m", "agent", "start"]
    port = settings.agent_http_port

    def probe(pid: int | None, since: float) -> ProbeResult:
        health = probe_worker(port, settings.agent_name)
        if not health.ok or pid is None:
            return health
        from voicectl.supervise.processes import process_tree_pids

        pids = process_tree_pids(pid)
        reg = find_since(
            settings.events_path,
            since,
            lambda r: r["event"] == "worker" and r.get("pid") in pids,
        )
        if reg is None:
            return ProbeResult(False, f"worker up on :{port}, not yet registered with LiveKit")
        return ProbeResult(True, f"{health.detail}, registered as {reg['worker_id']}")

    return ServiceSpec(
        name="agent",
        argv=argv,
        url=f"http://127.0.0.1:{port}/",
        ports=[port, settings.metrics_port],
        probe=probe,
        depends_on=("livekit", "letta", *(("llm", "embeddings") if settings.local_mode else ())),
        start_timeout=90.0,
    )


def _web(settings: Settings) -> ServiceSpec:
    from voicectl.web.probe import probe_web

    port = settings.web_port
    return ServiceSpec(
        name="web",
        argv=command_override(settings, "web") or [sys.executable, "-m", "voicectl.web"],
        url=f"http://127.0.0.1:{port}/",
        ports=[port],
        probe=lambda _pid, _since: probe_web(port, settings.web_host),
        start_timeout=20.0,
    )


def build_services(settings: Settings) -> dict[str, ServiceSpec]:
    """All services of this configuration, in start order."""
    specs = [_livekit(settings), _letta(settings), _agent(settings), _web(settings)]
    if settings.letta_managed and command_override(settings, "letta") is None:
        from voicectl.letta import managed as managed_letta

        specs.insert(1, managed_letta.postgres_spec(settings))
    if settings.local_mode:
        from voicectl.services.local import local_specs

        specs[:0] = local_specs(settings)
    return {spec.name: spec for spec in specs}


def select(services: dict[str, ServiceSpec], names: list[str], with_deps: bool) -> list[str]:
    """Validate service names; optionally add their dependencies; keep start order."""
    unknown = [n for n in names if n not in services]
    if unknown:
        raise UsageError(
            f"unknown service {unknown[0]!r} (choose from {', '.join(services)})"
        )
    chosen = set(names or services)
    if with_deps:
        stack = list(chosen)
        while stack:
            for dep in services[stack.pop()].depends_on:
                if dep in services and dep not in chosen:
                    chosen.add(dep)
                    stack.append(dep)
    return [n for n in services if n in chosen]


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
