"""A closer look at a quarantined message, for `scanmail quarantine show`: never its payload."""

from __future__ import annotations

import contextlib
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from scanmail import mime
from scanmail.errors import MalformedSpoolFile
from scanmail.quarantine import (
    PARTS,
    QuarantineError,
    Record,
    extras_dir,
    load_record,
    message_path,
)
from scanmail.spool import Spool, SpoolFile, read_spool_file

HEADER_PEEK = 64 << 10


@dataclass(frozen=True)
class Examination:
    """What the admin sees of a quarantined message: never its payload."""

    record: Record
    headers: tuple[tuple[str, str], ...]
    parts: tuple[mime.Part, ...]
    stored: tuple[tuple[str, int], ...]  # decoded files kept in <qid>.d/parts, with sizes
    problem: str = ""  # why the headers or the part tree are incomplete


def examine(spool: Spool, qid: str, limits: mime.Limits) -> Examination:
    """The record, the top-level headers and the part tree of a quarantined message."""
    path = message_path(spool, qid)
    if not path.is_file():
        raise QuarantineError(f"{qid}: not in quarantine")
    record = load_record(spool, qid)
    stored = tuple(_stored_parts(extras_dir(spool, qid) / PARTS))
    try:
        spool_file = read_spool_file(path)
    except MalformedSpoolFile as exc:
        return Examination(record, (), (), stored, f"envelope unreadable: {exc}")
    parts, problem = _part_tree(spool_file, limits)
    return Examination(record, tuple(read_headers(spool_file)), parts, stored, problem)


def read_headers(spool_file: SpoolFile) -> list[tuple[str, str]]:
    """The message's top-level header fields, unfolded and RFC 2047-decoded."""
    with spool_file.open_message() as handle:
        head = handle.read(HEADER_PEEK)
    ends = [i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0]
    if ends:
        head = head[: min(ends) + 2]
    parsed = BytesHeaderParser(policy=compat32).parsebytes(head)
    return [(name, _decoded(value)) for name, value in parsed.items()]


def _decoded(value: object) -> str:
    text = str(value)
    with contextlib.suppress(HeaderParseError, LookupError, UnicodeError, ValueError):
        text = str(make_header(decode_header(text)))
    return " ".join(text.split())


def _part_tree(spool_file: SpoolFile, limits: mime.Limits) -> tuple[tuple[mime.Part, ...], str]:
    """Walk the message as the pass does, in a private folder deleted at once."""
    with tempfile.TemporaryDirectory(prefix="scanmail-show-") as tmp:
        walker = mime.Walker(Path(tmp), limits)
        problem = ""
        try:
            with spool_file.open_message() as handle:
                walker.walk(handle)
        except mime.LimitExceeded as exc:
            problem = f"decoding stopped: {exc}"
        except Exception as exc:  # noqa: BLE001 - hostile input; show what was read
            problem = f"decoding failed: {exc!r}"[:300]
    return tuple(walker.result.parts), problem


def _stored_parts(folder: Path) -> Iterator[tuple[str, int]]:
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        with contextlib.suppress(OSError):
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                yield str(path.relative_to(folder)), st.st_size
