"""The `--wav IN` / `--out OUT` arguments of `say` and `talk`, checked the same way."""

from __future__ import annotations

from pathlib import Path


def wav_args_problem(wav_in: Path, wav_out: Path | None) -> str | None:
    """Why the input cannot be read or the output not written (one line), or None."""
    if not Path(wav_in).is_file():
        return f"--wav {wav_in}: no such file"
    if wav_out is not None and not Path(wav_out).parent.is_dir():
        return f"--out {wav_out}: no such directory"
    return None
