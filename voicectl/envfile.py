"""Edit one value of a .env file, keeping every other byte of it.

python-dotenv's `set_key` rewrites the whole file (it drops blank lines, re-quotes values);
this module changes only the bytes of the one value and leaves the rest alone: comments,
blank lines, order, quoting style, `export` prefixes, CRLF line endings, a missing final
newline and a leading BOM.

Which binding is changed when a key appears more than once: the last one, because that is
the one that takes effect (python-dotenv builds a dict in file order, so a later binding
overrides an earlier one). Lines are scanned with python-dotenv's own grammar (the regexes
below follow dotenv/parser.py of the pinned python-dotenv 1.2.4), so a `KEY=` inside another
key's multi-line quoted value is not taken for a binding. The result is read back with
python-dotenv before it replaces the file: if the key would not read as the new value, or any
other key would read differently, nothing is written and EnvFileError says why.

The file is replaced atomically (a temporary file in the same directory, fsync, rename),
keeping its permission bits; a symlinked .env is edited at its target.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent.config.loading import read_env_file
from voicectl.errors import UsageError, VoicectlError

ENCODING = "utf-8"
_BOM = "\ufeff"

# python-dotenv 1.2.4's grammar (dotenv/parser.py)
_multiline_whitespace = re.compile(r"\s*", re.MULTILINE)
_whitespace = re.compile(r"[^\S\r\n]*")
_export = re.compile(r"(?:export[^\S\r\n]+)?")
_single_quoted_key = re.compile(r"'([^']+)'")
_unquoted_key = re.compile(r"([^=\#\s]+)")
_equal_sign = re.compile(r"(=[^\S\r\n]*)")
_single_quoted_value = re.compile(r"'((?:\\.|[^'\\])*)'", re.DOTALL)
_double_quoted_value = re.compile(r'"((?:\\.|[^"\\])*)"', re.DOTALL)
_unquoted_value = re.compile(r"([^\r\n]*)")
_comment = re.compile(r"(?:[^\S\r\n]*#[^\r\n]*)?")
_end_of_line = re.compile(r"[^\S\r\n]*(?:\r\n|\n|\r|$)")
_rest_of_line = re.compile(r"[^\r\n]*(?:\r|\n|\r\n)?")
_inline_comment = re.compile(r"\s+#")
_newline = re.compile(r"\r\n|\n|\r")


class EnvFileError(UsageError):
    """The edit cannot be made without changing what the file means (exit 2)."""


@dataclass(frozen=True)
class Binding:
    """Where one `KEY=value` sits in the text.

    `start`/`end` delimit the value as written (quotes included); for a binding with no `=`
    (a bare `KEY`) both are where `=value` would go. `quote` is `'`, `"` or "" (unquoted).
    """

    key: str
    start: int
    end: int
    quote: str
    has_equals: bool


class _Scan:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def match(self, regex: re.Pattern[str]) -> re.Match[str]:
        m = regex.match(self.text, self.pos)
        if m is None:
            raise _NoMatch
        self.pos = m.end()
        return m


class _NoMatch(Exception):
    pass


def bindings(text: str) -> list[Binding]:
    """Every binding of a .env text (BOM already removed), in file order."""
    scan = _Scan(text)
    found: list[Binding] = []
    while scan.pos < len(text):
        try:
            scan.match(_multiline_whitespace)
            if scan.pos >= len(text):
                break
            scan.match(_export)
            if text.startswith("#", scan.pos):
                key = None
            elif text.startswith("'", scan.pos):
                key = scan.match(_single_quoted_key).group(1)
            else:
                key = scan.match(_unquoted_key).group(1)
            after_key = scan.pos
            scan.match(_whitespace)
            binding = None
            if text.startswith("=", scan.pos):
                after_equals = scan.pos + 1
                equal = scan.match(_equal_sign).group(1)
                binding = _value(scan, key, after_equals, len(equal) > 1)
            elif key is not None:
                binding = Binding(key, after_key, after_key, "", False)
            scan.match(_comment)
            scan.match(_end_of_line)
            if key is not None and binding is not None:
                found.append(binding)
        except _NoMatch:  # as python-dotenv: skip the rest of the line from where it failed
            scan.match(_rest_of_line)
    return found


def _value(scan: _Scan, key: str | None, after_equals: int, spaced: bool) -> Binding | None:
    """Read the value after `=` and say where it is."""
    text, start = scan.text, scan.pos
    char = text[start:start + 1]
    if spaced and char == "#":  # `KEY= # comment`: empty value, the rest is a comment
        return Binding(key, after_equals, after_equals, "", True) if key else None
    if char == "'":
        scan.match(_single_quoted_value)
        return Binding(key, start, scan.pos, "'", True) if key else None
    if char == '"':
        scan.match(_double_quoted_value)
        return Binding(key, start, scan.pos, '"', True) if key else None
    if char in ("", "\n", "\r"):
        return Binding(key, after_equals, after_equals, "", True) if key else None
    part = scan.match(_unquoted_value).group(1)
    comment = _inline_comment.search(part)
    kept = (part[:comment.start()] if comment else part).rstrip()
    if not kept:  # only blanks before the comment: write the value right after `=`
        return Binding(key, after_equals, after_equals, "", True) if key else None
    return Binding(key, start, start + len(kept), "", True) if key else None


def effective(text: str, key: str) -> Binding | None:
    """The binding of `key` that takes effect (the last one), or None when absent."""
    found = [b for b in bindings(text) if b.key == key]
    return found[-1] if found else None


def render(value: str, quote: str) -> str:
    """`value` written in the given quoting style (unquoted only where that reads back)."""
    if quote == "'":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if quote == '"' or not _plain(value):
        escaped = (value.replace("\\", "\\\\").replace('"', '\\"')
                   .replace("\n", "\\n").replace("\r", "\\r"))
        return '"' + escaped + '"'
    return value


def _plain(value: str) -> bool:
    """True when `value` reads back as itself unquoted."""
    return (value == value.strip() and not _newline.search(value)
            and not _inline_comment.search(value) and value[:1] not in ("'", '"', "#"))


def edit(text: str, key: str, value: str) -> str:
    """The text with `key` set to `value`: only the effective value's characters change."""
    bom = _BOM if text.startswith(_BOM) else ""
    body = text[len(bom):]
    binding = effective(body, key)
    if binding is None:
        newline = _newline.search(body)
        nl = newline.group(0) if newline else "\n"
        line = f"{key}={render(value, '')}"
        if not body:
            return bom + line + nl
        ends = body.endswith(("\n", "\r"))
        # a file without a final newline keeps lacking one; one with it keeps it
        return bom + body + (line + nl if ends else nl + line)
    new = render(value, binding.quote)
    if not binding.has_equals:
        new = "=" + new
    return bom + body[:binding.start] + new + body[binding.end:]


def _read_values(text: str) -> dict[str, str | None]:
    """The values as written (no ${VAR} expansion), read as dotenv_values(path) reads a file."""
    from dotenv import dotenv_values

    universal = text.replace("\r\n", "\n").replace("\r", "\n")
    return dict(dotenv_values(stream=io.StringIO(universal), interpolate=False))


def _check(old: str, new: str, key: str, value: str) -> None:
    if "${" in value:
        raise EnvFileError(f"{key}={value!r}: python-dotenv would expand the ${{...}} in it")
    before, after = _read_values(old), _read_values(new)
    if after.get(key) != value:
        raise EnvFileError(f"{key}={value!r} would not read back as written")
    changed = sorted(k for k in set(before) | set(after)
                     if k != key and before.get(k) != after.get(k))
    if changed:
        raise EnvFileError(f"setting {key} would change {', '.join(changed)}")


def set_value(path: Path, key: str, value: str) -> bool:
    """Set KEY=value in the file, keeping every other byte; True when it changed.

    A missing file is created with mode 0600. Raises EnvFileError (exit 2) when the edit
    cannot be made safely, VoicectlError when the file cannot be read or replaced.
    """
    path = Path(os.path.realpath(path))
    try:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = None
        old = "" if raw is None else raw.decode(ENCODING, errors="surrogateescape")
        if raw is not None and read_env_file(path).get(key) == value:
            return False
        new = edit(old, key, value)
        _check(old, new, key, value)
        _replace(path, new.encode(ENCODING, errors="surrogateescape"))
    except OSError as exc:
        raise VoicectlError(f"{path}: {exc.strerror or exc}") from None
    return True


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    try:
        st = os.stat(path)
        mode = stat.S_IMODE(st.st_mode)
    except FileNotFoundError:
        st, mode = None, 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            if st is not None and os.geteuid() == 0:
                try:
                    os.fchown(out.fileno(), st.st_uid, st.st_gid)
                except OSError:
                    pass
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def get_value(path: Path, key: str) -> str | None:
    return read_env_file(path).get(key)
