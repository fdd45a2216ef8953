"""Errors the CLI turns into one line and an exit code."""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class VoicectlError(Exception):
    """A failure to report as one line; `code` is the process exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its type's name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class UsageError(VoicectlError):
    """Bad usage or input (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)
