"""What waits in a spool folder for the forwarder: spool files, message bytes, parsed mail."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

from scanmail.spool import SpoolFile, list_complete, read_spool_file


def queued(root: Path, folder: str = "outgoing") -> list[SpoolFile]:
    """The complete spool files in SPOOL/folder, oldest first."""
    return [read_spool_file(path) for path in list_complete(root / folder)]


def outgoing_mail(root: Path) -> list[bytes]:
    """The messages in SPOOL/outgoing, oldest first, as bytes."""
    return [spool_file.read_message() for spool_file in queued(root)]


def parse_mail(data: bytes) -> EmailMessage:
    """Message bytes parsed with the modern policy."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parsed(spool_file: SpoolFile) -> EmailMessage:
    """A queued message parsed with the modern policy."""
    return parse_mail(spool_file.read_message())
