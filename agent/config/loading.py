"""Where settings come from: the process environment, then the project's `.env` file, then
the defaults of `Settings`; local mode then fills in its providers, and the result is validated.

This module must stay cheap to import (no third-party imports besides python-dotenv, loaded
lazily).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from agent.config import (
    LIVEKIT_SERVER_MODES,
    SERVER_TARGET_LOAD,
    TURN_DETECTION_MODES,
    ConfigError,
    Settings,
    config_fields,
    env_name,
)
from agent.config.local_mode import apply_local_mode

ENV_FILE_NAME = ".env"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(f: dataclasses.Field, raw: str, source: str) -> object:
    kind = type(f.default)
    env = f.metadata["env"]
    text = raw.strip()
    try:
        if kind is bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        want = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        raise ConfigError(f"{env}={raw!r} (from {source}) is not {want}") from None
    return raw


def read_env_file(path: Path) -> dict[str, str]:
    """Key/values of a .env file (missing file: empty)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return {k: v for k, v in values.items() if v is not None}


def load_settings(
    env_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings: environment, then the .env file, then defaults."""
    environ = os.environ if environ is None else environ
    if env_file is None:
        env_file = environ.get("VOICECTL_ENV_FILE") or Path.cwd() / ENV_FILE_NAME
    env_path = Path(env_file).expanduser().resolve()
    file_values = read_env_file(env_path)
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for f in config_fields():
        env = f.metadata["env"]
        if env in environ:
            values[f.name] = _convert(f, environ[env], "environment")
            sources[f.name] = "environment"
        elif env in file_values:
            values[f.name] = _convert(f, file_values[env], env_path.name)
            sources[f.name] = env_path.name
        else:
            sources[f.name] = "default"
    settings = Settings(
        **values, sources=sources, env_file=env_path, project_dir=env_path.parent
    )
    if settings.local_mode:
        settings = apply_local_mode(settings)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if s.letta_mode not in ("", "managed", "external"):
        raise ConfigError(f"LETTA_MODE={s.letta_mode!r} must be managed or external")
    if s.turn_detection not in TURN_DETECTION_MODES:
        raise ConfigError(f"TURN_DETECTION={s.turn_detection!r} must be auto, vad or stt")
    delays = s.endpointing_delays()  # raises on a bad value
    if {"min_delay", "max_delay"} <= delays.keys() and delays["min_delay"] > delays["max_delay"]:
        raise ConfigError("ENDPOINTING_MIN_DELAY_SECONDS must not exceed "
                          "ENDPOINTING_MAX_DELAY_SECONDS")
    if s.livekit_server not in LIVEKIT_SERVER_MODES:
        raise ConfigError(f"LIVEKIT_SERVER={s.livekit_server!r} must be "
                          f"{', '.join(LIVEKIT_SERVER_MODES[:-1])} or {LIVEKIT_SERVER_MODES[-1]}")
    for attr, schemes in (
        ("livekit_url", ("ws", "wss", "http", "https")),
        ("letta_server_url", ("http", "https")),
    ):
        url = getattr(s, attr)
        parts = urlsplit(url)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(f"{env_name(attr)}={url!r} is not a {'/'.join(schemes)} URL")
    for attr in ("agent_http_port", "letta_pg_port", "metrics_port", "web_port",
                 "local_llm_port", "local_embeddings_port"):
        port = getattr(s, attr)
        if not 0 < port < 65536:
            raise ConfigError(f"{env_name(attr)}={port} is not a TCP port")
    if not 0 < s.agent_load_threshold <= 1:
        raise ConfigError(f"AGENT_LOAD_THRESHOLD={s.agent_load_threshold:g} must be above 0 "
                          f"and at most 1 (LiveKit offers no job at {SERVER_TARGET_LOAD} or "
                          "more)")
    for f in config_fields():
        if f.name.startswith("price_") and not getattr(s, f.name) >= 0:
            raise ConfigError(f"{f.metadata['env']}={getattr(s, f.name)} must not be negative")
