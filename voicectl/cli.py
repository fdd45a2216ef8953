"""The voicectl command line: thin commands over the modules of this package."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.config import ConfigError, Settings, load_settings
from voicectl.errors import EXIT_FAILED, EXIT_USAGE, UsageError, VoicectlError

app = typer.Typer(
    name="voicectl",
    help="Run and operate a self-hosted LiveKit + Letta voice agent.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

_state: dict[str, Path | None] = {"env_file": None}

ServicesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Services (livekit, postgres, letta, agent); all when none given."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


@app.callback()
def _main(
    env_file: Annotated[
        Path | None,
        typer.Option("--env-file", help="The .env file (default: ./.env).", show_default=False),
    ] = None,
) -> None:
    _state["env_file"] = env_file


def settings() -> Settings:
    """The effective settings of this invocation."""
    env_file = _state["env_file"]
    if env_file is not None and not env_file.is_file():
        raise UsageError(f"--env-file {env_file}: no such file")
    try:
        return load_settings(env_file)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _services(s: Settings) -> dict:
    from voicectl.services import build_services

    return build_services(s)


def _out(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


@app.command()
def up(services: ServicesArg = None) -> None:
    """Start services (dependencies first) and wait until each is healthy."""
    from voicectl.printer import Printer
    from voicectl.services import select
    from voicectl.stack import StartError
    from voicectl.stack import up as stack_up

    s = settings()
    specs = _services(s)
    names = select(specs, services or [], with_deps=True)
    printer = Printer()
    try:
        with printer:
            stack_up(s, specs, names, printer)
    except StartError as exc:
        printer.failed(exc.service, str(exc))
        if exc.log_lines:
            printer.note(f"last lines of {exc.service}'s log:")
            for line in exc.log_lines:
                printer.console.print(f"  {line}", markup=False, highlight=False)
        raise
    _print_urls(s, specs, printer)


def _print_urls(s: Settings, specs: dict, printer) -> None:
    printer.note("")
    printer.note(f"LiveKit   {s.livekit_url}")
    printer.note(f"Letta     {s.letta_server_url}" + ("" if s.letta_managed else " (external)"))
    printer.note(f"Agent     {s.agent_name}  (health http://127.0.0.1:{s.agent_http_port}/)")
    printer.note(f"Logs      voicectl logs -f    State  {s.home}")


@app.command()
def down(services: ServicesArg = None) -> None:
    """Stop services: SIGTERM to each process group, then SIGKILL after the grace period."""
    from voicectl.printer import Printer
    from voicectl.services import select
    from voicectl.stack import down as stack_down

    s = settings()
    specs = _services(s)
    names = select(specs, services or [], with_deps=False)
    with Printer() as printer:
        stack_down(s, names, printer, specs)


@app.command()
def restart(services: ServicesArg = None) -> None:
    """Stop then start services."""
    down(services)
    up(services)


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """State, pid, ports, uptime, restarts, health and memory of each service."""
    from voicectl.status import all_status

    s = settings()
    rows = all_status(s, _services(s))
    if json_out:
        _out([r.to_json() for r in rows])
        return
    from voicectl.render import status_table

    status_table(rows)


@app.command()
def config(json_out: JsonOpt = False) -> None:
    """The effective configuration, where each value came from; secrets masked."""
    from voicectl.render import config_rows, config_table

    s = settings()
    rows = config_rows(s)
    if json_out:
        _out(rows)
        return
    config_table(rows, s)


def main() -> None:
    """Console entry point: every failure is one line and an exit code, never a traceback."""
    try:
        app(standalone_mode=False)
    except VoicectlError as exc:
        _fail(str(exc), exc.code)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    except typer.Abort:
        _fail("aborted", EXIT_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except _click_exceptions() as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


def _click_exceptions() -> tuple[type[BaseException], ...]:
    from typer._click.exceptions import ClickException

    return (ClickException,)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"voicectl: error: {message}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
