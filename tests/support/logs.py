"""Service logs and event logs as voicectl writes them, for the `voicectl logs` tests."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from agent.config import Settings
from agent.config.loading import load_settings


def log_home(root: Path) -> Path:
    """A state directory under `root` with an empty logs/ directory."""
    (root / "home" / "logs").mkdir(parents=True)
    return root / "home"


def home_settings(home: Path, root: Path) -> Settings:
    """Settings whose state directory is `home` (no .env file)."""
    return load_settings(root / "no.env", environ={"VOICECTL_HOME": str(home)})


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%dT%H:%M:%S")


def keeper_line(ts: float, service: str, text: str) -> str:
    return f"[voicectl {stamp(ts)}] {service}: {text}"


def write_log(home: Path, service: str, lines: list[str]) -> Path:
    path = home / "logs" / f"{service}.log"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_events(path: Path, records: list[dict], extra: list[str] = ()) -> None:
    lines = [json.dumps(r, separators=(",", ":")) for r in records] + list(extra)
    path.write_text("".join(line + "\n" for line in lines))


def turn(ts: float, mode: str, ttft_ms: float | None, path: str | None = None, **more) -> dict:
    return {"ts": ts, "event": "turn", "mode": mode, "path": path or mode, "ttft_ms": ttft_ms,
            "total_ms": None if ttft_ms is None else ttft_ms + 500, "fallback": False, **more}


def append(path: Path, *lines: str) -> None:
    with path.open("a") as fh:
        fh.write("".join(line + "\n" for line in lines))
