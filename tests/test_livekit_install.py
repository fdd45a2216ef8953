"""`voicectl install livekit` against a local release server serving archives built here.

The real CLI runs in a subprocess; VOICECTL_LIVEKIT_RELEASE_URL points it at an HTTP server on
127.0.0.1 that serves what each test puts in `release.files` and records what was asked for.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.project import Project
from voicectl.livekit import install as lk

VERSION = lk.LIVEKIT_VERSION
ASSET = lk.asset_name()  # this machine's archive, e.g. livekit_1.13.5_linux_amd64.tar.gz
SCRIPT = b'#!/bin/sh\necho "livekit-server version ' + VERSION.encode() + b'"\n'


class Release:
    """A release directory over HTTP: `files` maps names to bytes; `requests` logs GETs."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        release = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.removeprefix(f"/v{VERSION}/")
                release.requests.append(name)
                body = release.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v{VERSION}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, archive: bytes, *, listed: bytes | None = None) -> None:
        """Serve `archive` as this machine's asset, with a checksums file listing `listed`."""
        digest = hashlib.sha256(listed if listed is not None else archive).hexdigest()
        other = hashlib.sha256(b"other").hexdigest()
        self.files[ASSET] = archive
        self.files[lk.CHECKSUMS_NAME] = (
            f"{other}  livekit_{VERSION}_windows_amd64.zip\n{digest}  {ASSET}\n").encode()


def make_archive(members: dict[str, bytes | tuple[str, str]]) -> bytes:
    """A tar.gz: bytes are 0755 files; ("symlink" | "hardlink", target) are links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                kind, info.linkname = content
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


GOOD = make_archive({"LICENSE": b"Apache License 2.0\n", "livekit-server": SCRIPT})


@pytest.fixture
def release():
    rel = Release()
    yield rel
    rel.server.shutdown()
    rel.server.server_close()


@pytest.fixture
def project(make_project, release):
    return make_project({"VOICECTL_LIVEKIT_RELEASE_URL": release.url})


def _bin(project: Project) -> Path:
    return project.home / "bin"


def _bin_files(project: Project) -> list[str]:
    return sorted(p.name for p in _bin(project).iterdir()) if _bin(project).exists() else []


def _one_line_error(res: subprocess.CompletedProcess, code: int = 1) -> str:
    assert res.returncode == code, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert res.stdout == ""
    return lines[0].removeprefix("voicectl: error: ")


def test_installs_runs_skips_and_force_redownloads(project, release):
    release.publish(GOOD)
    binary = _bin(project) / "livekit-server"

    res = project.run("install", "livekit", check=True)
    assert res.stdout == f"✓ livekit-server {VERSION} installed at {binary}\n"
    assert res.stderr == ""  # no progress when stderr is not a terminal
    assert release.requests == [lk.CHECKSUMS_NAME, ASSET]
    assert _bin_files(project) == ["livekit-server", "livekit-server.json"]
    assert binary.stat().st_mode & 0o777 == 0o755
    ran = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    assert ran.stdout == f"livekit-server version {VERSION}\n"

    res = project.run("install", "livekit", check=True)
    assert res.stdout == f"✓ livekit-server {VERSION} already installed at {binary}\n"
    assert release.requests == [lk.CHECKSUMS_NAME, ASSET]  # nothing fetched

    doc = json.loads(project.run("install", "livekit", "--json", check=True).stdout)
    assert doc == {"path": str(binary), "version": VERSION, "asset": ASSET,
                   "sha256": hashlib.sha256(GOOD).hexdigest(), "downloaded": False,
                   "skipped": True}

    doc = json.loads(project.run("install", "livekit", "--force", "--json", check=True).stdout)
    assert doc["downloaded"] is True and doc["skipped"] is False
    assert release.requests == [lk.CHECKSUMS_NAME, ASSET] * 2
    assert _bin_files(project) == ["livekit-server", "livekit-server.json"]


def test_a_binary_changed_since_the_install_is_installed_again(project, release):
    release.publish(GOOD)
    project.run("install", "livekit", check=True)
    binary = _bin(project) / "livekit-server"
    binary.write_bytes(b"#!/bin/sh\necho something else\n")

    res = project.run("install", "livekit", check=True)
    assert res.stdout == f"✓ livekit-server {VERSION} installed at {binary}\n"
    assert binary.read_bytes() == SCRIPT


def test_checksum_mismatch_installs_nothing(project, release):
    corrupt = GOOD[:-10] + b"\0" * 10
    release.publish(corrupt, listed=GOOD)
    line = _one_line_error(project.run("install", "livekit"))
    assert line == (f"checksum mismatch for {ASSET}: expected "
                    f"{hashlib.sha256(GOOD).hexdigest()}, got "
                    f"{hashlib.sha256(corrupt).hexdigest()}; nothing installed")
    assert _bin_files(project) == []


def test_checksum_mismatch_leaves_an_installed_binary_intact(project, release):
    release.publish(GOOD)
    project.run("install", "livekit", check=True)
    binary = _bin(project) / "livekit-server"
    marker = (_bin(project) / lk.MARKER_NAME).read_bytes()

    evil = make_archive({"livekit-server": b"#!/bin/sh\necho evil\n"})
    release.publish(evil, listed=GOOD)
    line = _one_line_error(project.run("install", "livekit", "--force"))
    assert line.startswith(f"checksum mismatch for {ASSET}: expected ")
    assert _bin_files(project) == ["livekit-server", "livekit-server.json"]
    assert binary.read_bytes() == SCRIPT
    assert binary.stat().st_mode & 0o777 == 0o755
    assert (_bin(project) / lk.MARKER_NAME).read_bytes() == marker


def test_missing_asset_is_a_404(project, release):
    release.publish(GOOD)
    del release.files[ASSET]
    line = _one_line_error(project.run("install", "livekit"))
    assert line == f"no release asset {ASSET} at {release.url}{ASSET} (404)"
    assert _bin_files(project) == []


def test_missing_checksums_file_is_a_404(project, release):
    release.files[ASSET] = GOOD
    line = _one_line_error(project.run("install", "livekit"))
    assert line == f"no release asset checksums.txt at {release.url}checksums.txt (404)"
    assert release.requests == [lk.CHECKSUMS_NAME]
    assert _bin_files(project) == []


def test_connection_refused_says_offline(project):
    port = free_port()  # bound then closed: nothing listens there
    res = project.run("install", "livekit",
                      env={"VOICECTL_LIVEKIT_RELEASE_URL": f"http://127.0.0.1:{port}/"})
    assert _one_line_error(res) == "cannot reach 127.0.0.1: Connection refused (offline?)"
    assert _bin_files(project) == []


def test_checksums_without_the_entry_fetch_no_archive(project, release):
    release.publish(GOOD)
    release.files[lk.CHECKSUMS_NAME] = (
        f"{hashlib.sha256(GOOD).hexdigest()}  {ASSET}.sbom.json\n").encode()
    line = _one_line_error(project.run("install", "livekit"))
    assert line == (f"checksums.txt at {release.url}checksums.txt lists no sha256 for {ASSET}; "
                    "nothing installed")
    assert release.requests == [lk.CHECKSUMS_NAME]
    assert _bin_files(project) == []


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"LICENSE": b"license\n"}, f"{ASSET} holds no livekit-server; nothing installed"),
        ({"../livekit-server": SCRIPT, "bin/livekit-server": SCRIPT},
         f"{ASSET} holds no livekit-server; nothing installed"),
        ({"livekit-server": ("symlink", "/bin/sh")},
         f"livekit-server in {ASSET} is not a regular file (a link?); nothing installed"),
        ({"LICENSE": b"license\n", "livekit-server": ("hardlink", "LICENSE")},
         f"livekit-server in {ASSET} is not a regular file (a link?); nothing installed"),
    ],
    ids=["no-binary", "outside-the-top", "symlink", "hardlink"],
)
def test_archive_without_a_plain_binary_installs_nothing(project, release, members, message):
    release.publish(make_archive(members))
    assert _one_line_error(project.run("install", "livekit")) == message
    assert _bin_files(project) == []
    assert not (project.home / "livekit-server").exists()
    assert not (project.root / "livekit-server").exists()


def test_not_a_tar_gz_is_one_line(project, release):
    release.publish(b"<html>not an archive</html>")
    line = _one_line_error(project.run("install", "livekit"))
    assert line.startswith(f"{ASSET} is not a readable tar.gz (")
    assert line.endswith("); nothing installed")
    assert _bin_files(project) == []


def test_progress_in_bytes_on_a_terminal_only(project, release):
    release.publish(GOOD)
    master, slave = pty.openpty()
    try:
        res = subprocess.run([sys.executable, "-m", "voicectl.cli", "install", "livekit"],
                             cwd=project.root, env=project.env, stdout=subprocess.PIPE,
                             stderr=slave, text=True, timeout=60)
        os.close(slave)
        shown = os.read(master, 65536).decode()
    finally:
        os.close(master)
    assert res.returncode == 0
    assert res.stdout.startswith(f"✓ livekit-server {VERSION} installed at ")
    size = len(GOOD) / 2**20
    assert f"\r… {ASSET} {size:.1f} / {size:.1f} MiB" in shown

