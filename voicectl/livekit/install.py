"""Install the pinned livekit-server release under the state directory, verified, without sudo.

The Go binary is on no package registry, so we fetch LiveKit's own GitHub release and trust it
only as far as the release's `checksums.txt` vouches for the archive. Every write goes to a
temporary file beside the target and is renamed into place at the end: a failure at any step
leaves an earlier good binary as it was and nothing half-written.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from agent.state_paths import StatePaths
from voicectl.errors import UsageError, VoicectlError

# v1.13.5: the newest tag of github.com/livekit/livekit (version/version.go says 1.13.5). Its
# .goreleaser.yaml (goreleaser v2, project "livekit", builds linux/windows for amd64, arm64 and
# arm v7, tar.gz with LICENSE) names the assets livekit_<ver>_linux_<arch>.tar.gz and the sums
# file checksums.txt (sha256, "<hex>  <name>" lines).
LIVEKIT_VERSION = "1.13.5"
GITHUB_RELEASE_URL = "https://github.com/livekit/livekit/releases/download/v{version}/"
CHECKSUMS_NAME = "checksums.txt"
BINARY_NAME = "livekit-server"
MARKER_NAME = "livekit-server.json"
TIMEOUT_SECONDS = 30.0
MAX_BINARY_BYTES = 512 * 1024 * 1024  # the real one is ~53 MB: stop a runaway gzip stream
_CHUNK = 256 * 1024

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "armv7", "armv7": "armv7", "armv8l": "armv7", "armhf": "armv7"}

Progress = Callable[[int, int | None], None]


class InstallError(VoicectlError):
    """The install failed (exit 1); the message says what, in one line."""


def asset_name(system: str | None = None, machine: str | None = None,
               version: str = LIVEKIT_VERSION) -> str:
    """The release archive for this OS and CPU; UsageError (exit 2) when LiveKit builds none."""
    system = system or platform.system()
    machine = machine or platform.machine()
    arch = _ARCH.get(machine.lower())
    if system == "Linux" and arch:
        return f"livekit_{version}_linux_{arch}.tar.gz"
    hint = "; on macOS: brew install livekit" if system == "Darwin" else ""
    raise UsageError(f"no livekit-server release for {system} {machine} (LiveKit publishes "
                     f"Linux amd64, arm64 and armv7 builds){hint}")


def release_url(override: str = "", version: str = LIVEKIT_VERSION) -> str:
    """The directory URL the assets are fetched from (ends with '/')."""
    url = override.strip() or GITHUB_RELEASE_URL.format(version=version)
    return url if url.endswith("/") else url + "/"


def binary_path(home: Path) -> Path:
    return StatePaths(home).bin / BINARY_NAME


def installed(home: Path, version: str = LIVEKIT_VERSION) -> dict[str, Any] | None:
    """The marker of a completed install of `version` whose binary is still the one we wrote."""
    binary = binary_path(home)
    try:
        marker = json.loads((binary.parent / MARKER_NAME).read_text())
        if marker.get("version") != version or not os.access(binary, os.X_OK):
            return None
        with binary.open("rb") as fh:
            digest = _sha256_of(fh)
    except (OSError, ValueError, AttributeError):
        return None
    return marker if digest == marker.get("binary_sha256") else None


def install(home: Path, base_url: str, *, force: bool = False,
            progress: Progress | None = None, version: str = LIVEKIT_VERSION,
            asset: str | None = None) -> dict[str, Any]:
    """Install `version` into <home>/bin unless it is already there; the JSON report."""
    asset = asset or asset_name(version=version)
    binary = binary_path(home)
    if not force and (marker := installed(home, version)):
        return _report(binary, marker, downloaded=False)
    sums_url = base_url + CHECKSUMS_NAME
    expected = _expected_sha256(_fetch_text(sums_url, CHECKSUMS_NAME), asset, sums_url)
    try:
        binary.parent.mkdir(parents=True, exist_ok=True)
        with _temp(binary.parent, ".tar.gz.part") as archive, _temp(binary.parent, ".new") as new:
            got = _download(base_url + asset, asset, archive, progress)
            if got != expected:
                raise InstallError(f"checksum mismatch for {asset}: expected {expected}, "
                                   f"got {got}; nothing installed")
            binary_sha256 = _extract_binary(archive, asset, new)
            os.chmod(new, 0o755)
            os.replace(new, binary)
        marker = {"version": version, "asset": asset, "sha256": expected,
                  "binary_sha256": binary_sha256, "url": base_url + asset}
        _write_atomic(binary.parent / MARKER_NAME, json.dumps(marker, indent=2) + "\n")
    except OSError as exc:  # the disk, not the network: those became InstallError already
        raise InstallError(f"cannot install into {binary.parent}: "
                           f"{exc.strerror or exc}") from None
    return _report(binary, marker, downloaded=True)


def _report(binary: Path, marker: dict[str, Any], *, downloaded: bool) -> dict[str, Any]:
    return {"path": str(binary), "version": marker["version"], "asset": marker["asset"],
            "sha256": marker["sha256"], "downloaded": downloaded, "skipped": not downloaded}


@contextmanager
def _temp(directory: Path, suffix: str) -> Iterator[Path]:
    """A temporary file beside the target (same filesystem: the rename is atomic), always
    removed unless it was renamed away."""
    fd, name = tempfile.mkstemp(prefix=f".{BINARY_NAME}-", suffix=suffix, dir=directory)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    with _temp(path.parent, ".json.new") as tmp:
        tmp.write_text(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)


def _sha256_of(fh: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := fh.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _expected_sha256(sums: str, asset: str, sums_url: str) -> str:
    """The sha256 the release's checksums file lists for exactly `asset`."""
    for line in sums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == asset:
            digest = parts[0].lower()
            if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                return digest
    raise InstallError(f"{CHECKSUMS_NAME} at {sums_url} lists no sha256 for {asset}; "
                       "nothing installed")


def _net_error(exc: BaseException, url: str, name: str) -> InstallError:
    """One line for a failed request: 404, another HTTP status, or no route to the host."""
    import urllib.error

    host = urlsplit(url).hostname or url
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code == 404:
            return InstallError(f"no release asset {name} at {url} (404)")
        return InstallError(f"{url} answered HTTP {exc.code} {exc.reason}")
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        detail = f"timed out after {TIMEOUT_SECONDS:g} s"
    elif isinstance(reason, OSError):
        detail = reason.strerror or str(reason) or type(reason).__name__
    else:
        detail = str(reason) or type(reason).__name__
    return InstallError(f"cannot reach {host}: {detail} (offline?)")


def _urlopen(url: str, name: str) -> Any:
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "voicectl"})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except (OSError, HTTPException) as exc:  # URLError and HTTPError are OSErrors
        raise _net_error(exc, url, name) from None


def _read(resp: Any, url: str, name: str, size: int) -> bytes:
    try:
        return resp.read(size)
    except (OSError, HTTPException) as exc:  # a reset, a timeout, a short body
        raise _net_error(exc, url, name) from None


def _fetch_text(url: str, name: str) -> str:
    with _urlopen(url, name) as resp:
        return _read(resp, url, name, 1024 * 1024).decode("utf-8", "replace")


def _download(url: str, name: str, dest: Path, progress: Progress | None) -> str:
    """Stream `url` into `dest`; the sha256 of what arrived."""
    h = hashlib.sha256()
    with _urlopen(url, name) as resp, dest.open("wb") as out:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        while chunk := _read(resp, url, name, _CHUNK):
            out.write(chunk)
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return h.hexdigest()


def _extract_binary(archive: Path, asset: str, dest: Path) -> str:
    """Copy the archive's top-level regular file `livekit-server` into `dest` (never a path
    the archive chooses, never a link); its sha256."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = next((m for m in tar if m.name.removeprefix("./") == BINARY_NAME), None)
            if member is None:
                raise InstallError(f"{asset} holds no {BINARY_NAME}; nothing installed")
            if not member.isreg():
                raise InstallError(f"{BINARY_NAME} in {asset} is not a regular file (a link?); "
                                   "nothing installed")
            if member.size > MAX_BINARY_BYTES:
                raise InstallError(f"{BINARY_NAME} in {asset} is {member.size} bytes, "
                                   "too large; nothing installed")
            src = tar.extractfile(member)
            assert src is not None  # a regular member always has data
            h = hashlib.sha256()
            with src, dest.open("wb") as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                out.flush()
                os.fsync(out.fileno())
            return h.hexdigest()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InstallError(f"{asset} is not a readable tar.gz ({exc}); nothing installed") \
            from None
