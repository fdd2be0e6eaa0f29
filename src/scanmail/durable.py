"""Atomic, durable writes: the one way scanmail puts a file in place.

Decided once (issue 9): every file scanmail writes for keeps (spool files, quarantine
records, retry state, the canary, signature files, the statistics page, failure reasons)
is written under a partial name, fsynced, given its final mode, renamed into place, and
its folder fsynced. A crash leaves the old file or the new one, never half of one. The
partial file is created afresh (O_EXCL) and never through a symbolic link (O_NOFOLLOW).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in folder durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create(path: Path, mode: int = 0o600) -> int:
    """A new file's descriptor: never one that exists, never through a link."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)


def write_synced(partial: Path, data: bytes | Iterable[bytes], mode: int = 0o600) -> None:
    """Create partial afresh, write data, fsync it and give it its final mode.

    The caller renames it into place and fsyncs that folder (the partial's own folder
    needs no fsync: what must survive a crash is the name in the folder it moves to).
    A writer killed mid-write left an old partial: it is removed first (unlink never
    follows a link). Raises OSError, and then no partial file is left behind.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    fd = create(partial)
    try:
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                for chunk in [data] if isinstance(data, bytes) else data:
                    out.write(chunk)
                out.flush()
                os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def write_file(
    target: Path, data: bytes | Iterable[bytes], mode: int = 0o600,
    partial: Path | None = None,
) -> None:
    """Write data to target atomically and durably, with the given final mode.

    partial is where the file is built (default: a dot name beside target, which no
    reader of the folder takes); it must be on target's filesystem. Raises OSError, and
    then no partial file is left behind.
    """
    partial = partial or target.with_name(f".{target.name}.partial")
    write_synced(partial, data, mode)
    try:
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    fsync_dir(target.parent)


def write_text(target: Path, text: str, mode: int = 0o600) -> None:
    """write_file for text, in UTF-8 (raw 8-bit bytes from a message kept as they were)."""
    write_file(target, text.encode("utf-8", "surrogateescape"), mode)
