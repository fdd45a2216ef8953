"""`voicectl doctor`: every check, each with its status and the exact fix."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import psutil

from agent.config import LOOPBACK_HOSTS, Settings, mask
from voicectl.services.spec import ServiceSpec
from voicectl.supervise.keepers import live_child, live_keeper
from voicectl.supervise.ports import port_holder
from voicectl.supervise.process_tree import process_tree_pids
from voicectl.supervise.records import read_record
from voicectl.supervise.states import ServiceState
from voicectl.supervise.status import ServiceStatus, all_status

OK, WARN, FAIL = "ok", "warn", "fail"
PACKAGES = ("livekit-agents", "livekit-api", "letta-client", "typer", "rich", "psutil")
DEV_KEYS = {("devkey", "secret")}


@dataclass
class Check:
    """One row of the report."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def check_python() -> list[Check]:
    out = []
    version = ".".join(map(str, sys.version_info[:3]))
    out.append(Check("python", OK, f"Python {version} ({sys.executable})"))
    missing, found = [], []
    for pkg in PACKAGES:
        try:
            found.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(pkg)
    if missing:
        out.append(Check("packages", FAIL, f"missing: {', '.join(missing)}",
                         "make install  (or: pip install -e .)"))
    else:
        out.append(Check("packages", OK, ", ".join(found[:3])))
    out.append(check_log_scanner())
    return out


def check_log_scanner() -> Check:
    """The C scanner behind `logs --ttft`: without it the regex reader gives the same figures,
    about 14x slower."""
    try:
        import voicectl.logs._turnscan  # noqa: F401
    except ImportError:
        return Check("log scanner", WARN, "C scanner not built: logs --ttft reads with the regex "
                     "reader (about 14x slower)", "apt-get install -y gcc python3-dev, then "
                     "pip install --no-deps --force-reinstall -e .")
    return Check("log scanner", OK, "C scanner built (voicectl.logs._turnscan)")


def check_livekit_server(specs: dict[str, ServiceSpec]) -> Check:
    """Which LiveKit server runs (check name `livekit-server`, kept for scripts): the binary is
    ok, the embedded dev server a warning naming its limits and how to get the real one."""
    from voicectl.livekit import choice as lc

    choice = specs["livekit"].server
    assert choice is not None
    if choice.kind == lc.COMMAND:
        program = choice.argv[0] if choice.argv else "?"
        return Check("livekit-server", WARN, f"replaced by VOICECTL_LIVEKIT_CMD ({program})",
                     "unset VOICECTL_LIVEKIT_CMD to use the binary or the embedded server")
    if choice.kind == lc.EXTERNAL:
        return Check("livekit-server", OK, f"external server {choice.reason}: none runs here")
    if choice.problem:
        return Check("livekit-server", FAIL, f"LIVEKIT_SERVER=binary, none found in "
                     f"{choice.looked}", f"{lc.GET_BINARY}; or LIVEKIT_SERVER=embedded")
    if choice.kind == lc.EMBEDDED:
        why = (f"no livekit-server in {choice.looked}" if choice.looked
               else "LIVEKIT_SERVER=embedded")
        return Check("livekit-server", WARN, f"embedded dev server ({why}): "
                     f"{lc.EMBEDDED_LIMITS}",
                     f"for the real server: {lc.GET_BINARY}")
    return Check("livekit-server", OK, f"{choice.path}: {lc.binary_version(choice.path)}")


def check_webrtc_network(specs: dict[str, ServiceSpec]) -> list[Check]:
    """With the embedded server, media needs an interface other than loopback."""
    from voicectl.livekit import choice as lc

    choice = specs["livekit"].server
    if choice is None or choice.kind != lc.EMBEDDED:
        return []
    from voicectl.livekit_dev.hostnet import LOOPBACK_ONLY_FIX, loopback_only_warning

    why = loopback_only_warning()
    if why:
        return [Check("webrtc network", WARN, why, LOOPBACK_ONLY_FIX)]
    return []


def check_letta_install(s: Settings) -> list[Check]:
    if not s.letta_managed:
        return []
    if s.voicectl_letta_cmd:
        return [Check("letta install", WARN, "replaced by VOICECTL_LETTA_CMD",
                      "unset VOICECTL_LETTA_CMD to run the managed server")]
    from voicectl.letta import install as letta_install
    from voicectl.letta import managed as managed_letta
    from voicectl.letta import postgres

    out = []
    venv = managed_letta.venv_path(s)
    version = letta_install.installed_version(venv)
    if version:
        out.append(Check("letta install", OK, f"letta {version} in {venv}"))
    else:
        out.append(Check("letta install", WARN, f"not installed yet ({venv})",
                         "voicectl install letta  (or the first voicectl up does it, ~2 min)"))
    try:
        postgres.bin_dir()
        initialised = (postgres.data_dir(managed_letta.pg_dir(s)) / "PG_VERSION").exists()
        out.append(Check("postgres", OK if initialised else WARN,
                         "cluster initialised" if initialised else "not initialised yet",
                         "" if initialised else "voicectl install letta"))
    except letta_install.LettaSetupError as exc:
        out.append(Check("postgres", FAIL, str(exc).splitlines()[0], "make install"))
    return out


def check_keys(s: Settings) -> list[Check]:
    """The keys the configured providers need, shown masked."""
    needs: list[tuple[str, str, str]] = []  # (env, value, why)
    if not s.openai_base_url:
        needs.append(("OPENAI_API_KEY", s.openai_api_key, "LLM and TTS at OpenAI"))
    if s.stt_provider == "deepgram":
        needs.append(("DEEPGRAM_API_KEY", s.deepgram_api_key, "STT_PROVIDER=deepgram"))
    if s.tts_provider == "cartesia":
        needs.append(("CARTESIA_API_KEY", s.cartesia_api_key, "TTS_PROVIDER=cartesia"))
    if not s.letta_managed and "letta.com" in s.letta_server_url:
        needs.append(("LETTA_API_KEY", s.letta_api_key, "Letta Cloud"))
    out = []
    for env, value, why in needs:
        if value:
            out.append(Check(f"key {env}", OK, f"set ({mask(value)}) for {why}"))
        else:
            out.append(Check(f"key {env}", FAIL, f"missing, needed for {why}",
                             f"add {env}=... to {s.env_file}"))
    if s.openai_base_url:
        out.append(Check("key OPENAI_API_KEY", OK,
                         f"OpenAI-compatible endpoint {s.openai_base_url}"))
    return out


def check_ports(s: Settings, specs: dict[str, ServiceSpec]) -> list[Check]:
    out = []
    for name, spec in specs.items():
        if spec.external:
            continue
        record = read_record(s.home, name)
        ours: set[int] = set()
        if record is not None:
            for proc in (live_keeper(record), live_child(record)):
                if proc is not None:
                    ours |= process_tree_pids(proc.pid)
        for port in spec.ports:
            holder = port_holder(port)
            if holder is None:
                out.append(Check(f"port {port}", OK, f"free for {name}"))
            elif holder.pid in ours:
                out.append(Check(f"port {port}", OK, f"held by our {name} (pid {holder.pid})"))
            else:
                out.append(Check(f"port {port}", FAIL, f"{name}: {holder.describe()}",
                                 f"stop pid {holder.pid} or move {name} to another port"))
    return out


def check_services(rows: list[ServiceStatus]) -> list[Check]:
    out = []
    for r in rows:
        if r.state == ServiceState.RUNNING:
            out.append(Check(f"service {r.name}", OK, r.health))
        elif r.state == ServiceState.STOPPED:
            out.append(Check(f"service {r.name}", WARN, "stopped", f"voicectl up {r.name}"))
        elif r.state == ServiceState.STARTING:
            out.append(Check(f"service {r.name}", WARN, f"starting: {r.health}",
                             "wait, then run voicectl doctor again"))
        else:
            out.append(Check(f"service {r.name}", FAIL, f"{r.state}: {r.health}",
                             f"voicectl logs {r.name}; then voicectl restart {r.name}"))
    return out


def check_livekit_api(s: Settings, livekit_up: bool) -> Check:
    if not livekit_up:
        return Check("livekit credentials", WARN, "LiveKit not reachable: not checked",
                     "voicectl up livekit")
    from voicectl.errors import VoicectlError
    from voicectl.livekit.api import list_rooms

    try:
        rooms = list_rooms(s)
    except VoicectlError as exc:
        return Check("livekit credentials", FAIL, str(exc),
                     "set LIVEKIT_API_KEY / LIVEKIT_API_SECRET to the server's keys")
    return Check("livekit credentials", OK, f"API key {mask(s.livekit_api_key)} accepted by "
                 f"{s.livekit_http_url} ({len(rooms)} rooms)")


def check_letta_agent(s: Settings, letta_up: bool) -> Check:
    if not letta_up:
        return Check("letta agent", WARN, "Letta not reachable: not checked", "voicectl up letta")
    from voicectl.letta import agents as letta_agents

    try:
        agent = letta_agents.find_agent(
            s.letta_server_url, s.letta_api_key or None,
            agent_id=s.letta_agent_id or None, name=s.letta_agent_name,
        )
    except Exception as exc:  # letta_client raises many kinds
        return Check("letta agent", FAIL, f"{type(exc).__name__}: {str(exc)[:160]}",
                     "check LETTA_SERVER_URL and LETTA_API_KEY")
    wanted = s.letta_agent_id or s.letta_agent_name
    if agent is None:
        return Check("letta agent", FAIL, f"no Letta agent {wanted!r}",
                     f"voicectl letta create {s.letta_agent_name}")
    return Check("letta agent", OK, f"{agent['name']} ({agent['id']})")


def _worker_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if ("agent" in cmd or any(c.endswith("worker.py") for c in cmd)) and "start" in cmd:
            if any("python" in os.path.basename(c) for c in cmd[:1]):
                found.append(proc)
    return found


def check_duplicate_workers(s: Settings) -> Check:
    record = read_record(s.home, "agent")
    ours = live_child(record) if record else None
    others = [p for p in _worker_processes() if ours is None or p.pid != ours.pid]
    if not others:
        return Check("agent workers", OK, "no other agent worker on this machine")
    pids = ", ".join(str(p.pid) for p in others[:5])
    return Check("agent workers", WARN, f"other agent worker process(es): {pids}",
                 "two workers with one agent name split the jobs: stop the stray ones")


def check_dev_keys(s: Settings) -> Check:
    host = urlsplit(s.livekit_url).hostname or ""
    dev = (s.livekit_api_key, s.livekit_api_secret) in DEV_KEYS
    if dev and host not in LOOPBACK_HOSTS:
        return Check("dev keys", FAIL, f"development keys with non-loopback LiveKit {host}",
                     "generate real keys (livekit-server generate-keys) and set "
                     "LIVEKIT_API_KEY / LIVEKIT_API_SECRET")
    if dev:
        return Check("dev keys", OK, "development keys, loopback only")
    return Check("dev keys", OK, "custom keys")


def check_state_dir(s: Settings) -> Check:
    """Writable without writing: doctor is read-only (the state dir, or the nearest existing
    directory above it, must let this user create entries)."""
    path = s.home
    while not path.exists() and path.parent != path:
        path = path.parent
    if not path.is_dir():
        return Check("state dir", FAIL, f"{path} is not a directory",
                     f"remove {path} or set VOICECTL_HOME")
    if not os.access(path, os.W_OK | os.X_OK):
        return Check("state dir", FAIL, f"{path}: not writable by this user",
                     f"make {path} writable or set VOICECTL_HOME")
    if path != s.home:
        return Check("state dir", OK, f"{s.home} not created yet ({path} writable)")
    return Check("state dir", OK, f"{s.home} writable")


def run_checks(s: Settings, specs: dict[str, ServiceSpec]) -> list[Check]:
    """All checks; the slow network ones run in parallel."""
    rows = all_status(s, specs)
    state = {r.name: r.state for r in rows}
    checks = [*check_python(), check_livekit_server(specs), *check_webrtc_network(specs),
              *check_letta_install(s),
              *check_keys(s), *check_ports(s, specs), *check_services(rows)]
    slow: list[Callable[[], Check]] = [
        lambda: check_livekit_api(s, state.get("livekit") == ServiceState.RUNNING),
        lambda: check_letta_agent(s, state.get("letta") == ServiceState.RUNNING),
        lambda: check_duplicate_workers(s),
    ]
    with ThreadPoolExecutor(max_workers=len(slow)) as pool:
        checks += list(pool.map(lambda f: f(), slow))
    checks += [check_dev_keys(s), check_state_dir(s)]
    return checks
