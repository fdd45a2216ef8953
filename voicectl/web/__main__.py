"""`python -m voicectl.web [--host H] [--port P] [--env-file F]`: run the browser console.

Defaults: host WEB_HOST (127.0.0.1), port WEB_PORT (9000), settings from the environment and
the project's `.env` like every voicectl process. SIGTERM / SIGINT stop it (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import sys

from agent.config import ConfigError
from agent.config.loading import load_settings
from voicectl.web import DEFAULT_HOST

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voicectl.web", description=__doc__)
    parser.add_argument("--host", help="bind address (default WEB_HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default WEB_PORT, else 9000)")
    parser.add_argument("--env-file", help="the project's .env (default ./.env)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except ConfigError as exc:
        print(f"web: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.web_host or DEFAULT_HOST
    port = args.port or settings.web_port
    if not 0 < port < 65536:
        print(f"web: port {port} is not a TCP port", file=sys.stderr)
        return 2

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import warnings

    from aiohttp import web
    from jwt.warnings import InsecureKeyLengthWarning

    from voicectl.web.server import create_app

    # PyJWT warns on every token signed with a short secret (LiveKit's dev key is `secret`):
    # say it once instead of once per request.
    warnings.simplefilter("ignore", InsecureKeyLengthWarning)
    if len(settings.livekit_api_secret.encode()) < 32:
        logging.getLogger("voicectl.web").warning(
            "LIVEKIT_API_SECRET is shorter than 32 bytes: fine for a dev server only")
    if host not in LOOPBACK:
        logging.getLogger("voicectl.web").warning(
            "listening on %s: anyone who can reach it can mint LiveKit tokens and dispatch "
            "the agent", host)
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    try:
        web.run_app(
            create_app(settings, host), host=host, port=port, shutdown_timeout=2.0,
            access_log_format='%a "%r" %s %b %Tfs',
            print=lambda *_: print(f"web console on http://{shown}:{port}/ "
                                   f"(LiveKit {settings.livekit_url}, "
                                   f"Letta {settings.letta_server_url})", flush=True),
        )
    except OSError as exc:
        print(f"web: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
