"""The attachments of a TNEF winmail.dat, by tnefparse."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from scanmail.mime.archives.member import ArchiveError, Member

# tnefparse logs every oddity of hostile input at WARNING and above; its verdicts reach us
# as exceptions instead, so keep its chatter out of the mail log.
logging.getLogger("tnefparse").setLevel(logging.CRITICAL)

MAX_TNEF = 64 << 20


def members(path: Path, size: int) -> Iterator[Member]:
    """Each attachment, with its long and short names, its bytes in hand."""
    from tnefparse import TNEF  # a slow import, needed only for winmail.dat

    if size > MAX_TNEF:
        raise ArchiveError("tnef", "too large to list")
    try:
        tnef = TNEF(path.read_bytes(), do_checksum=False)
        attachments = list(tnef.attachments)
    except Exception as exc:  # noqa: BLE001 - hostile input; any parser failure is a defect
        raise ArchiveError("tnef", exc) from None
    for attachment in attachments:
        found: list[str] = []
        for getter in (attachment.long_filename, lambda a=attachment: a.name):
            try:
                name = getter()
            except Exception:  # noqa: BLE001
                continue
            if isinstance(name, bytes):
                name = name.decode("latin-1")
            if name and name not in found:
                found.append(str(name).strip("\x00"))
        data = attachment.data if isinstance(attachment.data, bytes) else b""
        yield Member(found, "tnef", len(data), data=data or None)
