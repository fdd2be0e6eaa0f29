"""The spool as daysumm reads it now: each folder's backlog, a quarantined message's subject."""

from __future__ import annotations

import contextlib
import os
from email.header import decode_header, make_header

from scanmail import quarantine
from scanmail.daysumm.model import Folder
from scanmail.errors import GatewayError
from scanmail.spool import Spool, list_complete
from scanmail.untrusted import one_line


def measure_folder(spool: Spool, name: str, now: float) -> Folder:
    """Complete spool files waiting in a folder, the oldest one's age, and their bytes."""
    files = 0
    size = 0
    oldest: float | None = None
    for path in list_complete(spool.folder(name)):
        try:
            st = path.stat()
        except FileNotFoundError:  # moved on while we looked
            continue
        files += 1
        size += st.st_size
        oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
    return Folder(name, files, None if oldest is None else max(0.0, now - oldest), size)


def measure_quarantine(spool: Spool, now: float) -> Folder:
    """Quarantined messages, the oldest one's age, and the bytes of everything kept."""
    oldest: float | None = None
    ids = quarantine.list_ids(spool)
    for qid in ids:
        with contextlib.suppress(FileNotFoundError):
            mtime = (spool.quarantine / qid).stat().st_mtime
            oldest = mtime if oldest is None else min(oldest, mtime)
    size = 0
    for top, _dirs, names in os.walk(spool.quarantine):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                size += os.lstat(os.path.join(top, name)).st_size
    return Folder("quarantine", len(ids), None if oldest is None else max(0.0, now - oldest), size)


def measure_backlog(spool: Spool, now: float) -> tuple[Folder, ...]:
    """Mail waiting now in incoming, outgoing and failed; the quarantine's size."""
    return (
        measure_folder(spool, "incoming", now),
        measure_folder(spool, "outgoing", now),
        measure_folder(spool, "failed", now),
        measure_quarantine(spool, now),
    )


def read_subject(spool: Spool, qid: str) -> str | None:
    """The Subject in a quarantined message's record, decoded; None if there is no record."""
    try:
        subject = quarantine.read_record(spool, qid).subject
    except GatewayError:
        return None
    # An undecodable encoded-word is shown as it came: a clue in itself.
    with contextlib.suppress(ValueError, LookupError, UnicodeError, AssertionError):
        subject = str(make_header(decode_header(subject)))
    return one_line(subject)
