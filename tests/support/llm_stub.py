"""The OpenAI-compatible stub (tests/fakes/openai_stub.py) for the span of a fixture."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.fakes.openai_stub import StubHandle, start_openai_stub


@contextlib.contextmanager
def running_openai_stub() -> Iterator[StubHandle]:
    """A stub on a free port, stopped on exit: every stub fixture's one way to run it."""
    handle = start_openai_stub()
    try:
        yield handle
    finally:
        handle.stop()
