"""The message buffer: DATA as it arrives, in memory up to a limit, then in an unlinked file."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MEMORY_LIMIT = 1 << 20  # larger messages are spilled to an unlinked file in tmp/ as they arrive
SPILL_BATCH = 64 << 10
READ_CHUNK = 1 << 20


class MessageBuffer:
    """The message as it arrives: in memory up to a limit, then in an unlinked file in tmp/."""

    def __init__(self, tmp_dir: Path, memory_limit: int = MEMORY_LIMIT) -> None:
        self.tmp_dir = tmp_dir
        self.memory_limit = memory_limit
        self.chunks: list[bytes] = []
        self.pending = 0
        self.size = 0
        self.file: BinaryIO | None = None

    def add(self, data: bytes) -> None:
        """Append bytes; raises OSError if the spill file cannot be written."""
        self.chunks.append(data)
        self.size += len(data)
        self.pending += len(data)
        if self.file is None and self.size > self.memory_limit:
            # O_TMPFILE where available: no name, so a crash or a drop leaves nothing behind.
            self.file = tempfile.TemporaryFile(dir=self.tmp_dir)  # noqa: SIM115 - closed in close()
        if self.file is not None and self.pending >= SPILL_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.file is not None and self.chunks:
            self.file.write(b"".join(self.chunks))
            self.chunks = []
            self.pending = 0

    def iter_chunks(self) -> Iterator[bytes]:
        """The whole message, in chunks (read back from the spill file if there is one)."""
        if self.file is None:
            yield b"".join(self.chunks)
            return
        self.flush()
        self.file.seek(0)
        while chunk := self.file.read(READ_CHUNK):
            yield chunk

    def discard(self) -> None:
        """Drop what was received (the message will be refused), keeping only the count."""
        self.chunks = []
        self.pending = 0
        self.close()

    def close(self) -> None:
        self.chunks = []
        if self.file is not None:
            self.file.close()
            self.file = None
