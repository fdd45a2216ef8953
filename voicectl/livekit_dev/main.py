"""``python -m voicectl.livekit_dev``: flags shaped like ``livekit-server --dev``.

Keys as the real server takes them: ``LIVEKIT_KEYS="key: secret"`` in the environment (one pair
per line or comma-separated; what voicectl passes, since a command line is public to ``ps``),
or ``--keys``; without either, the dev pair ``devkey`` / ``secret``. Like ``--dev`` it ignores
``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET``. The timeouts are options so tests can shorten
them; the defaults are the real server's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from voicectl.livekit_dev import config as cfg

log = logging.getLogger("livekit-dev")


def parse_keys(text: str) -> dict[str, str]:
    """``"key: secret"`` pairs, one per line or comma-separated (LIVEKIT_KEYS, --keys)."""
    keys: dict[str, str] = {}
    for item in text.replace(",", "\n").splitlines():
        if not item.strip():
            continue
        key, sep, secret = item.partition(":")
        if not sep or not key.strip() or not secret.strip():
            raise ValueError("keys must be 'KEY: SECRET' pairs")
        keys[key.strip()] = secret.strip()
    if not keys:
        raise ValueError("no key pair given")
    return keys


def parse_args(argv: Sequence[str] | None = None) -> tuple[cfg.DevConfig, str]:
    """The settings, and the log level."""
    parser = argparse.ArgumentParser(
        prog="python -m voicectl.livekit_dev",
        description="voicectl's LiveKit dev server: signaling, WebRTC audio, data, Twirp API "
        "and agent workers on one machine (not a production SFU).",
    )
    parser.add_argument("--dev", action="store_true", help="accepted for parity; always on")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=cfg.DEFAULT_PORT)
    parser.add_argument("--keys", help="'KEY: SECRET' (prefer $LIVEKIT_KEYS: argv is public)")
    parser.add_argument("--state-file", type=Path, help="write the state JSON on every change")
    parser.add_argument("--availability-timeout", type=float, default=cfg.AVAILABILITY_TIMEOUT,
                        help="seconds a worker has to answer a job offer (real: about 2.8)")
    parser.add_argument("--empty-timeout", type=float, default=cfg.EMPTY_TIMEOUT_S,
                        help="seconds a room nobody joined stays open (real: 300)")
    parser.add_argument("--departure-timeout", type=float, default=cfg.DEPARTURE_TIMEOUT_S,
                        help="seconds a room stays open after its last participant (real: 20)")
    parser.add_argument("--missing-room-delay", type=float, default=cfg.MISSING_ROOM_DELAY,
                        help="seconds before a dispatch call on a missing room fails (real: ~3)")
    parser.add_argument("--target-load", type=float,
                        default=float(os.environ.get("VOICECTL_DEV_TARGET_LOAD") or
                                      cfg.TARGET_LOAD),
                        help="workers at or above this load get no job (real: 0.7; "
                        "$VOICECTL_DEV_TARGET_LOAD)")
    parser.add_argument("--redispatch-on-register", action="store_true",
                        help="dev-only: give dispatches that found no worker to a matching "
                        "worker that registers later (the real server drops them)")
    parser.add_argument("--twirp-delay", action="append", default=[], metavar="METHOD=SECONDS",
                        help="dev-only: answer this Twirp method (e.g. ListParticipants) only "
                        "after SECONDS (a slow server, for tests); repeatable")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    source = "--keys" if args.keys else "LIVEKIT_KEYS"
    raw_keys = args.keys or os.environ.get("LIVEKIT_KEYS", "")
    try:
        keys = parse_keys(raw_keys) if raw_keys.strip() else {cfg.DEV_KEY: cfg.DEV_SECRET}
    except ValueError as exc:
        # one line, like every voicectl failure; never the value itself (it holds a secret)
        print(f"livekit-dev: bad {source}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    delays: dict[str, float] = {}
    for item in args.twirp_delay:
        method, _, seconds = item.partition("=")
        try:
            delays[method.strip()] = float(seconds)
        except ValueError:
            parser.error(f"--twirp-delay {item!r}: use METHOD=SECONDS")
    config = cfg.DevConfig(
        host=args.bind, port=args.port, keys=keys, state_file=args.state_file,
        availability_timeout=args.availability_timeout, empty_timeout=args.empty_timeout,
        departure_timeout=args.departure_timeout, missing_room_delay=args.missing_room_delay,
        redispatch_on_register=args.redispatch_on_register, target_load=args.target_load,
        twirp_delays=delays,
    )
    return config, args.log_level


def _setup_logging(level: str) -> None:
    # `--dev` keys are short on purpose; PyJWT warns about every token signed with them
    from jwt.warnings import InsecureKeyLengthWarning

    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
    )
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def serve(config: cfg.DevConfig) -> None:
    """Serve until SIGTERM or SIGINT; then tell participants and workers, and stop."""
    from aiohttp import web

    from voicectl.livekit_dev.server import DevServer

    server = DevServer(config)
    runner = web.AppRunner(server.app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        server.changed()
        from voicectl.livekit_dev.hostnet import LOOPBACK_ONLY_FIX, loopback_only_warning

        if (why := loopback_only_warning()) is not None:
            log.warning("%s; fix: %s", why, LOOPBACK_ONLY_FIX)
        log.info("voicectl LiveKit dev server %s listening on ws://%s:%d (API keys: %s)",
                 cfg.SERVER_VERSION, config.host, config.port, ", ".join(config.keys))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        await server.close()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    config, level = parse_args(argv)
    _setup_logging(level)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        return 1
    return 0
