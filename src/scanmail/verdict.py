"""The closed sets producers and readers of events share: verdicts, reasons, event kinds."""

from __future__ import annotations

from enum import Enum


class Verdict(Enum):
    """Where a message goes."""

    DELIVER = "deliver"
    QUARANTINE = "quarantine"
    RETRY = "retry"


class Reason(Enum):
    """Why."""

    CLEAN = "clean"
    BANNED = "banned"
    INFECTED = "infected"
    UNCHECKED = "unchecked"
    ENCRYPTED = "encrypted"  # an archive member that cannot be read, so not scanned (issue 10)
    MALFORMED = "malformed"
    SCANNER_DOWN = "scanner-down"
    SCAN_FAILED = "scan-failed"
