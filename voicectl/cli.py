"""The voicectl command line: thin commands over the modules of this package."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.config import ConfigError, Settings
from agent.config.loading import load_settings
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
    typer.Argument(help="Services (livekit, postgres, letta, agent, web); all when none given."),
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
    from voicectl.services.catalog import build_services

    return build_services(s)


def _out(doc: object) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


@app.command()
def up(
    services: ServicesArg = None,
    local: Annotated[bool, typer.Option(
        "--local", help="Local mode: whisper STT, piper TTS, the llm and embeddings services, "
        "no cloud keys (sets LOCAL_MODE=true in .env).")] = False,
) -> None:
    """Start services (dependencies first) and wait until each is healthy."""
    from voicectl.render.progress import Printer, print_urls
    from voicectl.services.catalog import select
    from voicectl.supervise.stack import StartError
    from voicectl.supervise.stack import up as stack_up

    s = settings()
    if local and not s.local_mode:
        s = _enable_local_mode(s)
    if s.local_mode:
        from voicectl.services.local import missing_for_local

        missing = missing_for_local(s)
        if missing:
            raise VoicectlError(f"local mode needs {', '.join(missing)}: "
                                "pip install 'voicectl[local]' (and 'voicectl[piper]', GPL-3.0)")
    specs = _services(s)
    names = select(specs, services or [], with_deps=True)
    printer = Printer()
    try:
        with printer:
            stack_up(s, specs, names, printer)
    except StartError as exc:
        printer.failed(exc.service, str(exc))
        if exc.log_lines:
            printer.log_tail(exc.service, exc.log_lines)
        raise
    print_urls(printer, s, specs)


def _enable_local_mode(s: Settings) -> Settings:
    """Write LOCAL_MODE=true to .env (so status, down and logs see the same stack)."""
    import os

    from voicectl.envfile import set_value
    from voicectl.render.progress import local_mode_written

    if "LOCAL_MODE" in os.environ:
        raise UsageError("LOCAL_MODE is set in the environment, which overrides "
                         f"{s.env_file.name if s.env_file else '.env'}: unset it first")
    if s.env_file is None:
        raise UsageError("no .env file to record LOCAL_MODE in")
    set_value(s.env_file, "LOCAL_MODE", "true")
    local_mode_written(s.env_file)
    return settings()


@app.command()
def down(services: ServicesArg = None) -> None:
    """Stop services: SIGTERM to each process group, then SIGKILL after the grace period."""
    from voicectl.render.progress import Printer
    from voicectl.services.catalog import select
    from voicectl.supervise.stack import down as stack_down

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
    from voicectl.supervise.status import all_status

    s = settings()
    rows = all_status(s, _services(s))
    if json_out:
        _out([r.to_json() for r in rows])
        return
    from voicectl.render.status import status_table

    status_table(rows)


@app.command()
def config(json_out: JsonOpt = False) -> None:
    """The effective configuration, where each value came from; secrets masked."""
    from voicectl.effective_config import config_rows

    s = settings()
    rows = config_rows(s)
    if json_out:
        _out(rows)
        return
    from voicectl.render.config import config_table

    config_table(rows, s)


@app.command()
def logs(
    services: Annotated[list[str] | None, typer.Argument(
        help="Services to show (default: all with a log).", show_default=False)] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
                      ] = False,
    lines: Annotated[str | None, typer.Option(
        "--lines", "-n", metavar="N|all", show_default=False,
        help="Lines per service (50), turns for --ttft (20); a number or 'all'.")] = None,
    since: Annotated[str | None, typer.Option(
        metavar="WHEN", show_default=False,
        help="From: 30s, 10m, 2h, 1d, 1h30m, an ISO time or HH:MM today.")] = None,
    until: Annotated[str | None, typer.Option(
        metavar="WHEN", show_default=False, help="Until: as --since.")] = None,
    grep: Annotated[str | None, typer.Option(
        metavar="REGEX", show_default=False, help="Only lines matching this regex.")] = None,
    ttft: Annotated[bool, typer.Option(
        "--ttft", help="Time to first token per turn, with p50/p95/p99/max per mode.")] = False,
    circuit: Annotated[bool, typer.Option(
        "--circuit", help="Circuit breaker transitions and how long each stayed open.")
    ] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="One JSON document (with -f: one object per line).")] = False,
) -> None:
    """Service logs (tail, follow, filter); --ttft and --circuit read the agent's event log."""
    from voicectl.logs.command import run_logs

    run_logs(settings(), services or [], follow=follow, lines=lines, since=since, until=until,
             grep=grep, ttft=ttft, circuit=circuit, json_out=json_out)


@app.command()
def metrics(
    url: Annotated[str | None, typer.Option(
        "--url", metavar="URL", show_default=False,
        help="Metrics endpoint (default: http://127.0.0.1:METRICS_PORT/metrics).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Summary of the agent's live Prometheus metrics: turns, TTFT, breakers, memory sync, cost."""
    from voicectl.metrics_view import metrics_summary

    doc = metrics_summary(settings(), url)
    if json_out:
        _out(doc)
        return
    from voicectl.render.metrics import metrics_report

    metrics_report(doc)


@app.command()
def chat(
    mode: Annotated[str | None, typer.Option(
        help="hybrid or letta (default: USE_HYBRID_STREAMING).", show_default=False)] = None,
) -> None:
    """Talk to the agent's brain in the terminal (no LiveKit needed); /quit ends."""
    from agent.chat import run_chat
    from voicectl.render.chat import ChatTranscript

    if mode not in (None, "hybrid", "letta"):
        raise UsageError(f"--mode takes hybrid or letta, not {mode!r}")
    run_chat(settings(), sys.stdin, ChatTranscript(sys.stdout), mode=mode)


@app.command()
def doctor(json_out: JsonOpt = False) -> None:
    """Run every check, each with its fix; exit 1 when any fails."""
    from voicectl.doctor import FAIL, run_checks

    s = settings()
    checks = run_checks(s, _services(s))
    if json_out:
        _out([c.to_json() for c in checks])
    else:
        from voicectl.render.doctor import doctor_table

        doctor_table(checks)
    if any(c.status == FAIL for c in checks):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def dispatch(
    room: Annotated[str, typer.Argument(help="Room to send the agent into.")],
    agent_name: Annotated[str | None, typer.Option(help="Agent name (default AGENT_NAME).")] = None,
    metadata: Annotated[str | None, typer.Option(help="Job metadata, a JSON document.")] = None,
    create_room: Annotated[bool, typer.Option("--create-room", help="Create the room first.")
                           ] = False,
    wait: Annotated[float | None, typer.Option(
        help="Seconds to wait until the worker accepted the job.", min=0)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the room's dispatches.")] = False,
    delete: Annotated[str | None, typer.Option(help="Delete this dispatch id.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Send the agent into a room (explicit dispatch); or --list / --delete dispatches."""
    from voicectl.livekit import api as ops
    from voicectl.livekit.agent_dispatch import dispatch_agent
    from voicectl.render import livekit as show

    s = settings()
    ops.check_room(room)
    if list_ and delete:
        raise UsageError("--list and --delete exclude each other")
    if list_:
        rows = ops.list_dispatches(s, room)
        if json_out:
            _out(rows)
        else:
            show.dispatch_list(rows, room)
        return
    if delete:
        result = ops.delete_dispatch(s, room, delete)
        if json_out:
            _out(result)
        else:
            show.dispatch_deleted(delete)
        return
    meta = ops.parse_metadata(metadata)
    sent = dispatch_agent(s, room, agent_name or s.agent_name, meta, create_room, wait)
    if json_out:
        _out(sent.result)
    else:
        show.dispatched(sent.result, waited=wait is not None)
    if sent.failure:
        raise VoicectlError(sent.failure)


@app.command()
def token(
    room: Annotated[str, typer.Argument(help="Room the token joins.")],
    identity: Annotated[str, typer.Option(help="Participant identity.")],
    ttl: Annotated[str, typer.Option(help="Validity: 90s, 10m, 6h, 1d.")] = "6h",
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """A join token for a browser or a test client."""
    from voicectl.livekit import api as ops
    from voicectl.render.livekit import join_token

    s = settings()
    result = ops.join_token(s, ops.check_room(room), ops.check_identity(identity),
                            ops.parse_ttl(ttl), name)
    if json_out:
        _out(result)
    else:
        join_token(result)


@app.command()
def say(
    wav: Annotated[Path, typer.Option(
        "--wav", help="The recorded utterance (16-bit PCM WAV, any rate).", show_default=False)],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the spoken reply to this WAV.", show_default=False)] = None,
    fast: Annotated[bool, typer.Option(
        "--fast", help="Feed the recording as fast as the VAD takes it, not in real time.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """One voice turn without LiveKit: VAD, STT, the brain and TTS on a recording, timed."""
    from voicectl.render.voice import say_report
    from voicectl.voice.say import run_say

    result = run_say(settings(), wav, out, realtime=not fast)
    if json_out:
        _out(result.to_json())
    else:
        say_report(result)


@app.command()
def talk(
    room: Annotated[str | None, typer.Argument(
        help="Room to call in (default: a new talk-XXXXXXXX).", show_default=False)] = None,
    wav: Annotated[Path, typer.Option(
        "--wav", help="What to say (16-bit PCM WAV, any rate).", show_default=False)] = ...,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the agent's reply as heard to this WAV.", show_default=False)
    ] = None,
    agent_name: Annotated[str | None, typer.Option(
        help="Agent to dispatch (default AGENT_NAME).", show_default=False)] = None,
    no_dispatch: Annotated[bool, typer.Option(
        "--no-dispatch", help="Do not dispatch: an agent is already in the room.")] = False,
    timeout: Annotated[float, typer.Option(
        help="Seconds to wait for the agent to join, and for its reply.", min=1)] = 30.0,
    json_out: JsonOpt = False,
) -> None:
    """A caller in a LiveKit room: speak a recording to the agent, hear it, measure it."""
    from voicectl.render.voice import talk_report
    from voicectl.voice.talk import run_talk

    doc = run_talk(settings(), room, wav, out, agent_name=agent_name, dispatch=not no_dispatch,
                   timeout=timeout)
    if json_out:
        _out(doc)
    else:
        talk_report(doc)


@app.command()
def hybrid(
    mode: Annotated[str, typer.Argument(help="on, off or status.")] = "status",
    json_out: JsonOpt = False,
) -> None:
    """Turn hybrid streaming on or off in .env (restarts a running agent), or show it."""
    from voicectl.hybrid import switch_hybrid
    from voicectl.render.hybrid import hybrid_report

    if mode not in ("on", "off", "status"):
        raise UsageError(f"hybrid takes on, off or status, not {mode!r}")
    report = switch_hybrid(settings(), mode, _services)
    if json_out:
        _out(report)
    else:
        hybrid_report(report)


install_app = typer.Typer(help="Install components ahead of time.", no_args_is_help=True)
letta_app = typer.Typer(help="Letta agents: list them, create voice-ready ones.",
                        no_args_is_help=True)
app.add_typer(install_app, name="install")
app.add_typer(letta_app, name="letta")


@install_app.command("letta")
def install_letta() -> None:
    """Install the managed Letta server (own venv) and initialise its Postgres."""
    from voicectl.letta import managed as managed_letta
    from voicectl.render.letta import InstallProgress

    s = settings()
    if not s.letta_managed:
        raise UsageError(f"Letta is external ({s.letta_server_url}): nothing to install")
    progress = InstallProgress()
    managed_letta.install(s, progress.step)
    progress.done(managed_letta.venv_path(s))


@install_app.command("livekit")
def install_livekit(
    force: Annotated[bool, typer.Option("--force", help="Download and install again.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Install the pinned livekit-server release into the state directory (checksum-verified)."""
    from voicectl.livekit import install as lk
    from voicectl.render import livekit as show

    s = settings()
    asset = lk.asset_name()
    progress = None if json_out or not sys.stderr.isatty() else show.byte_progress(asset)
    report = lk.install(s.home, lk.release_url(s.livekit_release_url), force=force,
                        progress=progress, asset=asset)
    if progress is not None and report["downloaded"]:
        show.byte_progress_end()
    if json_out:
        _out(report)
    else:
        show.livekit_installed(report)


@letta_app.command("agents")
def letta_agents(json_out: JsonOpt = False) -> None:
    """List the Letta server's agents."""
    from voicectl.letta import agents as la
    from voicectl.letta.calls import letta_call

    s = settings()
    agents = letta_call(lambda: la.list_agents(s.letta_server_url, s.letta_api_key or None))
    if json_out:
        _out(agents)
        return
    from voicectl.render.letta import agents_table

    agents_table(agents, s.letta_agent_id, s.letta_agent_name)


@letta_app.command("create")
def letta_create(
    name: Annotated[str, typer.Argument(help="Name of the new Letta agent.")],
    json_out: JsonOpt = False,
) -> None:
    """Create a voice-ready Letta agent: persona and human memory, sleep-time compute."""
    from agent.memory import letta_agent_spec
    from voicectl.letta import agents as la
    from voicectl.letta.calls import letta_call
    from voicectl.render.letta import agent_created

    s = settings()
    if not name.strip():
        raise UsageError("the agent name must not be empty")
    agent = letta_call(lambda: la.create_voice_agent(
        s.letta_server_url, s.letta_api_key or None, name,
        model=s.letta_llm_model,
        embedding_model=s.letta_embedding_model,
        embedding_endpoint=letta_agent_spec.embedding_endpoint(s),
        embedding_dim=s.letta_embedding_dim,
        openai_base_url=s.openai_base_url or None,
    ))
    if json_out:
        _out(agent)
    else:
        agent_created(agent)


def main() -> None:
    """Console entry point: every failure is one line and an exit code, never a traceback."""
    import warnings

    # the --dev keys are short: PyJWT's warning about it is noise on every command
    warnings.filterwarnings("ignore", message="The HMAC key is")
    try:
        code = app(standalone_mode=False)
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
    sys.exit(code if isinstance(code, int) else 0)


def _click_exceptions() -> tuple[type[BaseException], ...]:
    from click.exceptions import ClickException

    return (ClickException,)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"voicectl: error: {message}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
