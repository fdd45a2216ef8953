"""Follow a growing file like `tail -F`: new complete lines, across rotation and truncation."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


@dataclass
class Follower:
    """Reads what is appended to `path`.

    Rotation (the path now names another file): the old file is read to its end, then the new
    one from its start. Truncation (the file got shorter than what was read): read again from
    the start. A missing file is waited for. `notes` collects what happened, for the user.
    """

    path: Path
    offset: int | None = None  # where to start; None: the end of the file as it is now
    notes: list[str] = field(default_factory=list)
    _fh: BinaryIO | None = None
    _ident: tuple[int, int] | None = None
    _partial: bytes = b""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._open(self.offset)

    def _open(self, offset: int | None) -> bool:
        try:
            fh = self.path.open("rb")
        except OSError:
            return False
        st = os.fstat(fh.fileno())
        fh.seek(st.st_size if offset is None else min(offset, st.st_size))
        self._fh, self._ident, self._partial = fh, (st.st_dev, st.st_ino), b""
        return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def poll(self) -> list[bytes]:
        """The complete lines appended since the last poll (without their newline)."""
        if self._fh is None:
            return self._open(0) and self._read() or []
        lines = self._read()
        current = self._current_ident()
        if current is not None and current != self._ident:
            if self._partial:
                lines.append(self._partial)
            self.close()
            self.notes.append(f"{self.path.name}: rotated, following the new file")
            if self._open(0):
                lines += self._read()
        elif os.fstat(self._fh.fileno()).st_size < self._fh.tell():
            self.notes.append(f"{self.path.name}: truncated, reading from the start")
            self._fh.seek(0)
            self._partial = b""
            lines += self._read()
        return lines

    def _current_ident(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _read(self) -> list[bytes]:
        assert self._fh is not None
        data = self._fh.read()
        if not data:
            return []
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return lines
