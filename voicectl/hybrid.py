"""`voicectl hybrid on|off|status`: the USE_HYBRID_STREAMING switch in .env."""

from __future__ import annotations

import os
from collections.abc import Callable

from agent.config import Settings
from agent.config.loading import load_settings
from agent.events import find_since
from voicectl.envfile import get_value, set_value
from voicectl.errors import UsageError
from voicectl.supervise.keepers import live_child
from voicectl.supervise.process_tree import process_tree_pids
from voicectl.supervise.records import read_record

KEY = "USE_HYBRID_STREAMING"


def running_agent_mode(s: Settings) -> bool | None:
    """The mode the running agent reported at registration (None when not running/known)."""
    record = read_record(s.home, "agent")
    child = live_child(record) if record else None
    if child is None:
        return None
    pids = process_tree_pids(child.pid)
    event = find_since(s.events_path, record.started_at,
                       lambda r: r["event"] == "worker" and r.get("pid") in pids)
    if event is None or "hybrid" not in event:
        return None
    return bool(event["hybrid"])


def _word(flag: bool | None) -> str:
    return {True: "on", False: "off", None: "unknown"}[flag]


def switch_hybrid(s: Settings, mode: str, services: Callable[[Settings], dict]) -> dict:
    """Edit .env (when on/off), restart a running agent, report file/effective/running modes."""
    if s.env_file is None:
        raise UsageError("no .env file to edit")
    lines: list[str] = []
    restarted = False
    if mode in ("on", "off"):
        if KEY in os.environ:
            raise UsageError(f"{KEY} is set in the environment, which overrides "
                             f"{s.env_file.name}: unset it first")
        changed = set_value(s.env_file, KEY, "true" if mode == "on" else "false")
        lines.append(f"{s.env_file}: {KEY}={'true' if mode == 'on' else 'false'}"
                     + ("" if changed else " (unchanged)"))
        s = load_settings(s.env_file)
        record = read_record(s.home, "agent")
        if changed and record is not None and live_child(record) is not None:
            _restart_agent(s, services(s))
            restarted = True
            lines.append("restarted the agent")
    running = running_agent_mode(s)
    report = {
        "env_file": get_value(s.env_file, KEY),
        "effective": s.use_hybrid_streaming,
        "running": running,
        "restarted": restarted,
    }
    agent = f"{_word(running)} (running agent)" if running is not None else "agent not running"
    lines.append(f"hybrid streaming: {_word(s.use_hybrid_streaming)} (configured), {agent}")
    report["lines"] = lines
    return report


def _restart_agent(s: Settings, specs: dict) -> None:
    from voicectl.render.progress import Printer
    from voicectl.supervise.stack import down, up

    with Printer() as printer:
        down(s, ["agent"], printer, specs)
        up(s, specs, ["agent"], printer)
