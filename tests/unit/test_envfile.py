"""`.env` edits keep the file: only the bytes of the changed value differ (voicectl/envfile.py).

Byte-for-byte cases, then a property-style test over generated files: a hand-written
generator builds each file from pieces and knows where the value that takes effect sits, so
the expected bytes are computed independently of the editor.
"""

from __future__ import annotations

import io
import os
import random
import re
import stat
from dataclasses import dataclass

import pytest
from dotenv import dotenv_values

from voicectl import envfile
from voicectl.envfile import EnvFileError, set_value

KEY = "USE_HYBRID_STREAMING"


def _edit_file(tmp_path, data: bytes, value: str = "false", key: str = KEY) -> bytes:
    path = tmp_path / ".env"
    path.write_bytes(data)
    set_value(path, key, value)
    return path.read_bytes()


@pytest.mark.parametrize(("before", "after"), [
    # blank lines and comments stay (python-dotenv's set_key dropped the blank lines)
    (b"# keys\n\nA=1\n\n\n# mode\nUSE_HYBRID_STREAMING=true\n\nB=2\n",
     b"# keys\n\nA=1\n\n\n# mode\nUSE_HYBRID_STREAMING=false\n\nB=2\n"),
    # a missing final newline stays missing
    (b"A=1\nUSE_HYBRID_STREAMING=true", b"A=1\nUSE_HYBRID_STREAMING=false"),
    # CRLF line endings stay
    (b"A=1\r\n\r\nUSE_HYBRID_STREAMING=true\r\nB=2\r\n",
     b"A=1\r\n\r\nUSE_HYBRID_STREAMING=false\r\nB=2\r\n"),
    # quoting style of the value is kept
    (b"USE_HYBRID_STREAMING='true'\n", b"USE_HYBRID_STREAMING='false'\n"),
    (b'USE_HYBRID_STREAMING="true"\n', b'USE_HYBRID_STREAMING="false"\n'),
    # spaces, export, trailing comment, other keys' quoting untouched
    (b"export USE_HYBRID_STREAMING = true   # on by default\nA = 'x y'  \n",
     b"export USE_HYBRID_STREAMING = false   # on by default\nA = 'x y'  \n"),
    # duplicated key: the last binding takes effect in python-dotenv, so it changes
    (b"USE_HYBRID_STREAMING=true\nA=1\nUSE_HYBRID_STREAMING=true\n",
     b"USE_HYBRID_STREAMING=true\nA=1\nUSE_HYBRID_STREAMING=false\n"),
    # a KEY= line inside another key's multi-line value is not a binding
    (b'USE_HYBRID_STREAMING=true\nNOTE="a\nUSE_HYBRID_STREAMING=x\n"\n',
     b'USE_HYBRID_STREAMING=false\nNOTE="a\nUSE_HYBRID_STREAMING=x\n"\n'),
    # empty value, with and without a comment; a bare key
    (b"USE_HYBRID_STREAMING=\nA=1\n", b"USE_HYBRID_STREAMING=false\nA=1\n"),
    (b"USE_HYBRID_STREAMING= # later\n", b"USE_HYBRID_STREAMING=false # later\n"),
    (b"USE_HYBRID_STREAMING # later\n", b"USE_HYBRID_STREAMING=false # later\n"),
    # absent key: appended, with the file's line ending; a newline first when it has none
    (b"A=1\n\n", b"A=1\n\nUSE_HYBRID_STREAMING=false\n"),
    (b"A=1\r\n# end", b"A=1\r\n# end\r\nUSE_HYBRID_STREAMING=false"),
    (b"", b"USE_HYBRID_STREAMING=false\n"),
    # a BOM and non-ASCII text survive
    (b"\xef\xbb\xbfUSE_HYBRID_STREAMING=true\n# caf\xc3\xa9\n",
     b"\xef\xbb\xbfUSE_HYBRID_STREAMING=false\n# caf\xc3\xa9\n"),
])
def test_edit_changes_only_the_value(tmp_path, before: bytes, after: bytes) -> None:
    assert _edit_file(tmp_path, before) == after


def test_values_that_need_quotes_are_quoted(tmp_path) -> None:
    assert _edit_file(tmp_path, b"K=1\n", "a # b", "K") == b'K="a # b"\n'
    assert _edit_file(tmp_path, b"K='1'\n", "it's", "K") == b"K='it\\'s'\n"
    assert _edit_file(tmp_path, b'K="1"\n', 'say "hi"', "K") == b'K="say \\"hi\\""\n'
    assert _edit_file(tmp_path, b"K=1\n", " padded ", "K") == b'K=" padded "\n'
    for value in ("a # b", "it's", 'say "hi"', " padded ", "back\\slash", "two\nlines"):
        path = tmp_path / ".env"
        path.write_bytes(b"K=1\nK2='2'\nK3=\"3\"\n")
        for key in ("K", "K2", "K3"):
            set_value(path, key, value)
            assert dotenv_values(path)[key] == value, (key, value, path.read_bytes())


def test_unchanged_value_leaves_the_file_alone(tmp_path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"USE_HYBRID_STREAMING=true")
    before = os.stat(path)
    assert set_value(path, KEY, "true") is False
    assert path.read_bytes() == b"USE_HYBRID_STREAMING=true"
    assert os.stat(path).st_ino == before.st_ino


def test_mode_is_kept_and_new_files_are_private(tmp_path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=1\n")
    path.chmod(0o640)
    set_value(path, KEY, "true")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    fresh = tmp_path / "fresh.env"
    set_value(fresh, KEY, "true")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert fresh.read_bytes() == b"USE_HYBRID_STREAMING=true\n"


def test_symlinked_env_is_edited_at_its_target(tmp_path) -> None:
    target = tmp_path / "real.env"
    target.write_bytes(b"A=1\n")
    link = tmp_path / ".env"
    link.symlink_to(target)
    set_value(link, KEY, "true")
    assert link.is_symlink() and target.read_bytes() == b"A=1\nUSE_HYBRID_STREAMING=true\n"


def test_a_failed_write_leaves_the_file_whole(tmp_path, monkeypatch) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=1\nUSE_HYBRID_STREAMING=true\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(envfile.os, "replace", broken_replace)
    with pytest.raises(envfile.VoicectlError, match="No space left on device"):
        set_value(path, KEY, "false")
    assert path.read_bytes() == b"A=1\nUSE_HYBRID_STREAMING=true\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]  # no temporary left


def test_an_edit_that_would_change_meaning_is_refused(tmp_path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"A=1\n")
    with pytest.raises(EnvFileError, match="expand"):
        set_value(path, "B", "${A}")
    # an unterminated quote would swallow an appended quoted value: A would change
    path.write_bytes(b'A="open\n')
    with pytest.raises(EnvFileError, match="would change A|would not read back"):
        set_value(path, "K", 'say "hi"')
    assert path.read_bytes() == b'A="open\n'


# --- property-style: generated files ----------------------------------------------------

KEYS = (KEY, "OPENAI_API_KEY", "LIVEKIT_URL", "X_1")
NEW_VALUES = ("true", "false", "on the fly", "")
SAFE = "abcXYZ019_-./:@"


@dataclass
class Piece:
    text: str
    key: str | None = None  # a binding of this key
    start: int = 0  # the value span (or insertion point) inside `text`
    end: int = 0
    quote: str = ""
    equals: bool = True


def _word(rng: random.Random, extra: str = "") -> str:
    return "".join(rng.choice(SAFE + extra) for _ in range(rng.randint(1, 8)))


def _ws(rng: random.Random) -> str:
    return rng.choice(["", "", " ", "  ", "\t"])


def _binding(rng: random.Random, nl: str) -> Piece:
    key = rng.choice(KEYS)
    head = _ws(rng) + rng.choice(["", "", "export ", "export\t"])
    head += rng.choice([key, key, key, f"'{key}'"]) + _ws(rng)
    kind = rng.choice(["plain", "plain", "single", "double", "multiline", "empty", "bare",
                       "hash"])
    tail_comment = rng.choice(["", "", f" # {_word(rng)}", f"\t#{_word(rng, ' =')}"])
    if kind == "bare":
        text = head.rstrip(" \t") if not tail_comment else head
        at = len(head.rstrip(" \t"))
        return Piece(text + tail_comment, key, at, at, "", False)
    head += "="
    eq = len(head)
    if kind == "empty":
        spaced = _ws(rng) or " "
        text = head + (spaced + "# c" if rng.random() < 0.5 else _ws(rng))
        return Piece(text, key, eq, eq)
    head += _ws(rng)
    if kind == "plain":
        value = _word(rng) + rng.choice(["", "#", "$", " "]) + rng.choice(["", _word(rng)])
        value = value.rstrip()
        quote = ""
    elif kind == "hash":
        value, quote = "#" + _word(rng), ""  # `KEY=#x`: the # belongs to the value
        head = head[:eq]
    elif kind == "single":
        value, quote = "'" + _word(rng, " #\"") + rng.choice(["", "\\'"]) + "'", "'"
    elif kind == "double":
        value, quote = '"' + _word(rng, " #'") + rng.choice(["", '\\"', "\\n"]) + '"', '"'
    else:  # a value over several lines, with a decoy binding of the key inside
        value = f'"{_word(rng)}{nl}{KEY}=decoy{nl}{_word(rng)}"'
        quote = '"'
    return Piece(head + value + _ws(rng) + tail_comment, key, len(head), len(head) + len(value),
                 quote)


def _piece(rng: random.Random, nl: str) -> Piece:
    kind = rng.random()
    if kind < 0.15:
        return Piece(_ws(rng))  # blank
    if kind < 0.3:
        return Piece(_ws(rng) + "#" + rng.choice(["", " ", f" {KEY}=commented "]) + _word(rng))
    if kind < 0.35:
        return Piece(rng.choice(["=oops", "just some words", "%%% no"]))  # not a binding
    return _binding(rng, nl)


def _generate(rng: random.Random) -> tuple[str, list[Piece], list[int]]:
    """A .env text, its pieces and each piece's offset."""
    style = rng.choice(["\n", "\n", "\r\n", "mixed", "\r"])
    pieces, offsets, parts = [], [], []
    bom = "\ufeff" if rng.random() < 0.05 else ""
    pos = len(bom)
    for _ in range(rng.randint(0, 12)):
        nl = rng.choice(["\n", "\r\n"]) if style == "mixed" else style
        piece = _piece(rng, nl)
        pieces.append(piece)
        offsets.append(pos)
        parts.append(piece.text + nl)
        pos += len(piece.text) + len(nl)
    text = bom + "".join(parts)
    if parts and rng.random() < 0.3:  # no final newline
        text = text.rstrip("\r\n") if pieces[-1].text.strip() else text
    return text, pieces, offsets


def _rendered(value: str, quote: str) -> str:
    return quote + value + quote  # NEW_VALUES need no escaping, and read back unquoted


def _expected(text: str, pieces: list[Piece], offsets: list[int], value: str) -> str:
    hits = [(p, o) for p, o in zip(pieces, offsets, strict=True) if p.key == KEY]
    if not hits:
        bom = "\ufeff" if text.startswith("\ufeff") else ""
        body = text[len(bom):]
        m = re.search(r"\r\n|\n|\r", body)
        nl = m.group(0) if m else "\n"
        line = f"{KEY}={value}"
        if not body:
            return bom + line + nl
        return bom + body + (line + nl if body.endswith(("\n", "\r")) else nl + line)
    piece, at = hits[-1]
    new = _rendered(value, piece.quote)
    if not piece.equals:
        new = "=" + new
    return text[:at + piece.start] + new + text[at + piece.end:]


def _values(text: str) -> dict:
    universal = text.replace("\r\n", "\n").replace("\r", "\n")
    return dotenv_values(stream=io.StringIO(universal), interpolate=False)


def test_generated_files_change_only_the_effective_value(tmp_path) -> None:
    rng = random.Random(1212)
    path = tmp_path / ".env"
    checked = duplicates = absent = 0
    for case in range(1500):
        text, pieces, offsets = _generate(rng)
        value = rng.choice(NEW_VALUES)
        data = text.encode()
        path.write_bytes(data)
        before = _values(text)
        set_value(path, KEY, value)
        after = path.read_bytes().decode()
        if before.get(KEY) == value:
            assert after == text, case
            continue
        assert after == _expected(text, pieces, offsets, value), (case, text, after)
        values = _values(after)
        assert values[KEY] == value
        assert {k: v for k, v in values.items() if k != KEY} == {
            k: v for k, v in before.items() if k != KEY}
        checked += 1
        keys = [p.key for p in pieces]
        duplicates += keys.count(KEY) > 1
        absent += KEY not in keys
    assert checked > 1000 and duplicates > 100 and absent > 100  # the generator covers them


def test_bindings_agree_with_python_dotenv() -> None:
    """The scanner finds the same keys, in the same order, as python-dotenv's parser."""
    from dotenv.parser import parse_stream

    rng = random.Random(7)
    for _ in range(1500):
        text, _pieces, _offsets = _generate(rng)
        body = text.removeprefix("\ufeff")
        ours = [b.key for b in envfile.bindings(body)]
        theirs = [b.key for b in parse_stream(io.StringIO(body)) if b.key is not None]
        assert ours == theirs, text
