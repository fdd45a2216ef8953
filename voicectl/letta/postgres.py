"""Embedded PostgreSQL 16 + pgvector for the managed Letta server, from the `pgserver` wheel.

Layout under `pg_dir` (normally `<VOICECTL_HOME>/letta/pg`): `data/` (the cluster) and `sock/`
(the unix socket directory, private). The server listens on 127.0.0.1:`port` and on the socket;
logins are accepted on the socket only (see PG_HBA).
PostgreSQL refuses to run as root, so as root the cluster belongs to an unprivileged system
user (`voicectl-pg`, created on demand) and the supervisor runs the server as that user.

Lifecycle for the supervisor: `ensure_initialized()` before every start (idempotent, cheap),
run `server_argv()` in the foreground as `run_as_user()`, poll `is_ready()`, then
`ensure_database()` once it is ready. Stop it with SIGINT ("fast" shutdown): SIGTERM is a
"smart" shutdown that waits for every client (Letta's pooled connections) to disconnect.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from voicectl.letta.install import LettaSetupError, Progress

DEFAULT_PORT = 8284
SYSTEM_USER = "voicectl-pg"
SUPERUSER = "postgres"
DB_NAME = "letta"
DB_ROLE = "letta"
STOP_SIGNAL = signal.SIGINT
# Logins only over the unix socket, whose directory is private to the server's user (and root);
# the TCP port listens on 127.0.0.1 (probes, a port of our own) but refuses every login, so
# other local users cannot reach the trust-authenticated cluster.
PG_HBA = """\
# written by voicectl: logins over the private unix socket only
local   all   all                 trust
host    all   all   127.0.0.1/32  reject
host    all   all   ::1/128       reject
"""
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN"


class PostgresSetupError(LettaSetupError):
    """The embedded PostgreSQL could not be prepared."""


def _noop(_msg: str) -> None:
    pass


def bin_dir() -> Path:
    """The directory of the PostgreSQL binaries inside the installed `pgserver` wheel."""
    spec = importlib.util.find_spec("pgserver")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise PostgresSetupError("the pgserver package is not installed (pip install pgserver)")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise PostgresSetupError(f"PostgreSQL binaries missing in {path}")
    return path


def data_dir(pg_dir: Path | str) -> Path:
    """The cluster's data directory."""
    return Path(pg_dir).absolute() / "data"


def socket_dir(pg_dir: Path | str) -> Path:
    """The unix socket directory: `<pg_dir>/sock`, or a short /tmp path if that is too long."""
    path = Path(pg_dir).absolute() / "sock"
    if len(str(path)) + len("/.s.PGSQL.65535") <= _SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"voicectl-pg-{digest}"


def run_as_user() -> str | None:
    """The user the server must run as: `voicectl-pg` when we are root, else None (ourselves)."""
    return SYSTEM_USER if os.geteuid() == 0 else None


def popen_user_kwargs() -> dict[str, Any]:
    """Keyword arguments for subprocess.Popen that drop to `run_as_user()` (empty if not root).

    Sets group and clears supplementary groups too: `user=` alone keeps root's groups.
    """
    user = run_as_user()
    if user is None:
        return {}
    try:
        pw = pwd.getpwnam(user)
    except KeyError as exc:
        raise PostgresSetupError(f"system user {user!r} missing: run ensure_initialized") from exc
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _ensure_system_user(progress: Progress) -> str | None:
    user = run_as_user()
    if user is None:
        return None
    try:
        pwd.getpwnam(user)
        return user
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    progress(f"creating system user {user}")
    res = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "--comment", "voicectl embedded PostgreSQL", user],
        capture_output=True, text=True,
    )
    if res.returncode != 0 and res.returncode != 9:  # 9: the user appeared meanwhile
        raise PostgresSetupError(f"useradd {user} failed: {(res.stderr or res.stdout).strip()}")
    return user


def _check_traversable(path: Path, uid: int, gid: int) -> None:
    """Raise unless every ancestor of `path` lets (uid, gid) through (search permission)."""
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            user = pwd.getpwuid(uid).pw_name
            raise PostgresSetupError(
                f"user {user} cannot reach {path}: {parent} is not searchable by it "
                f"(fix: chmod o+x {parent}, or put VOICECTL_HOME somewhere else)"
            )


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def _prepare_dirs(pg_dir: Path, progress: Progress) -> tuple[int, int] | None:
    """Create data/ and the socket dir with the right owner; return (uid, gid) if we drop."""
    user = _ensure_system_user(progress)
    data, sock = data_dir(pg_dir), socket_dir(pg_dir)
    pg_dir.mkdir(parents=True, exist_ok=True)
    data.mkdir(mode=0o700, exist_ok=True)
    sock.mkdir(mode=0o700, exist_ok=True)
    if user is None:
        data.chmod(0o700)
        sock.chmod(0o700)
        return None
    pw = pwd.getpwnam(user)
    uid, gid = pw.pw_uid, pw.pw_gid
    for path in (data, sock):
        if path.stat().st_uid != uid:
            _chown_tree(path, uid, gid)
    data.chmod(0o700)
    sock.chmod(0o700)  # only the server's user (and root) may connect: see PG_HBA
    _check_traversable(data, uid, gid)
    _check_traversable(sock, uid, gid)
    _check_traversable(bin_dir() / "postgres", uid, gid)
    return uid, gid


def ensure_initialized(
    pg_dir: Path | str, port: int = DEFAULT_PORT, progress: Progress | None = None
) -> bool:
    """Create the cluster once (initdb); prepare dirs and ownership on every call.

    Returns True if initdb ran. Call it before every start: it also recreates the socket dir.
    `port` is not stored in the cluster; `server_argv` passes it each time.
    """
    progress = progress or _noop
    pg_dir = Path(pg_dir).absolute()
    ids = _prepare_dirs(pg_dir, progress)
    data = data_dir(pg_dir)
    if (data / "PG_VERSION").exists():
        _write_hba(data, ids)
        return False
    if any(data.iterdir()):
        raise PostgresSetupError(f"{data} is not empty but holds no cluster: move it away")
    progress(f"initialising PostgreSQL in {data}")
    kwargs = popen_user_kwargs() if ids else {}
    res = subprocess.run(
        [str(bin_dir() / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
         "--encoding=UTF8", "--locale=C", "--no-instructions"],
        capture_output=True, text=True, cwd=str(data), stdin=subprocess.DEVNULL, **kwargs,
    )
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-20:])
        raise PostgresSetupError(f"initdb failed (exit {res.returncode}):\n{tail}")
    _write_hba(data, ids)
    return True


def _write_hba(data: Path, ids: tuple[int, int] | None) -> None:
    """Install PG_HBA (read at server start) unless it is already there."""
    hba = data / "pg_hba.conf"
    try:
        if hba.read_text() == PG_HBA:
            return
    except OSError:
        pass
    hba.write_text(PG_HBA)
    hba.chmod(0o600)
    if ids:
        os.chown(hba, *ids)


def server_argv(pg_dir: Path | str, port: int = DEFAULT_PORT) -> list[str]:
    """The foreground server command (run it as `run_as_user()`; stop it with SIGINT)."""
    return [
        str(bin_dir() / "postgres"),
        "-D", str(data_dir(pg_dir)),
        "-p", str(port),
        "-k", str(socket_dir(pg_dir)),
        "-h", "127.0.0.1",
    ]


def is_ready(pg_dir: Path | str, port: int = DEFAULT_PORT, timeout: float = 2.0) -> bool:
    """True when the server accepts connections on its unix socket (pg_isready)."""
    try:
        res = subprocess.run(
            [str(bin_dir() / "pg_isready"), "-q", "-h", str(socket_dir(pg_dir)), "-p", str(port),
             "-U", SUPERUSER, "-d", "postgres", "-t", str(max(1, int(timeout)))],
            capture_output=True, timeout=timeout + 1, stdin=subprocess.DEVNULL,
        )
    except (subprocess.TimeoutExpired, OSError, PostgresSetupError):
        return False
    return res.returncode == 0


def wait_ready(pg_dir: Path | str, port: int = DEFAULT_PORT, timeout: float = 30.0) -> None:
    """Poll `is_ready` until it holds; raise PostgresSetupError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not is_ready(pg_dir, port):
        if time.monotonic() > deadline:
            raise PostgresSetupError(f"PostgreSQL not ready on port {port} after {timeout:.0f} s")
        time.sleep(0.1)


def uri(pg_dir: Path | str, port: int = DEFAULT_PORT) -> str:
    """LETTA_PG_URI over the unix socket (the `localhost` host part must stay: see DESIGN)."""
    return f"postgresql://{DB_ROLE}@localhost/{DB_NAME}?host={socket_dir(pg_dir)}&port={port}"


def psql(
    pg_dir: Path | str, port: int, sql: str, *, database: str = "postgres",
    user: str = SUPERUSER,
) -> str:
    """Run SQL with the wheel's psql over the socket; return its unaligned output."""
    res = subprocess.run(
        [str(bin_dir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
         "-h", str(socket_dir(pg_dir)), "-p", str(port), "-U", user, "-d", database, "-c", sql],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    if res.returncode != 0:
        raise PostgresSetupError(f"psql failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout.strip()


def ensure_database(pg_dir: Path | str, port: int = DEFAULT_PORT) -> bool:
    """Create role `letta`, database `letta` (owned by it) and extension vector; idempotent.

    Returns True if the database was created now. The server must be ready.
    """
    if psql(pg_dir, port, f"SELECT 1 FROM pg_roles WHERE rolname = '{DB_ROLE}'") != "1":
        psql(pg_dir, port, f"CREATE ROLE {DB_ROLE} LOGIN")
    created = False
    if psql(pg_dir, port, f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'") != "1":
        psql(pg_dir, port, f"CREATE DATABASE {DB_NAME} OWNER {DB_ROLE} ENCODING 'UTF8'")
        created = True
    psql(pg_dir, port, "CREATE EXTENSION IF NOT EXISTS vector", database=DB_NAME)
    return created

