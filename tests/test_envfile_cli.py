"""`voicectl hybrid` edits `.env` in place through the CLI: the bytes around the value stay,
and a file it cannot read or write is one line on stderr (the editor itself: unit/test_envfile.py).
"""

from __future__ import annotations


def test_hybrid_off_keeps_blank_lines_and_crlf(make_project, tmp_path) -> None:
    project = make_project({"LETTA_MODE": "external"})
    env_file = tmp_path / ".env"
    original = b"# keys\r\n\r\nOPENAI_API_KEY='sk-1'\r\n\r\nUSE_HYBRID_STREAMING=\"true\"\r\nX=1"
    env_file.write_bytes(original)
    res = project.run("hybrid", "off", check=True)
    assert "USE_HYBRID_STREAMING=false" in res.stdout
    assert env_file.read_bytes() == original.replace(b'"true"', b'"false"')
    res = project.run("hybrid", "on", check=True)
    assert env_file.read_bytes() == original


def test_an_env_that_is_not_utf8_is_one_line(make_project, tmp_path) -> None:
    project = make_project({"LETTA_MODE": "external"})
    (tmp_path / ".env").write_bytes(b"# caf\xe9\nUSE_HYBRID_STREAMING=true\n")
    res = project.run("hybrid", "off")
    assert res.returncode == 2, res.stderr
    assert res.stderr == f"voicectl: error: {tmp_path / '.env'}: not UTF-8 text (byte 5)\n"
    assert (tmp_path / ".env").read_bytes() == b"# caf\xe9\nUSE_HYBRID_STREAMING=true\n"


def test_hybrid_on_an_env_it_cannot_write_is_one_line(make_project, tmp_path) -> None:
    project = make_project({"LETTA_MODE": "external"})
    (tmp_path / ".env").mkdir()  # unreadable as a file, whoever runs the test (root included)
    res = project.run("hybrid", "off")
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith("voicectl: error: ") and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1
