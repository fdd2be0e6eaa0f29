"""The closed sets producers and readers of events share: verdicts, reasons, event kinds."""

from __future__ import annotations

from enum import Enum, StrEnum


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


class EventKind(StrEnum):
    """What an event in the event log records (its `kind` column)."""

    SCAN = "scan"  # a final decision: one per spool id, replaced if a crashed pass decides again
    RETRY = "retry"  # the scanner gave no answer; the message stays in incoming
    OUTAGE = "outage"  # the scanner went down or came back (reason: OutageState)
    RELEASE = "release"  # the admin released a quarantined message
    DELETE = "delete"  # the admin deleted a quarantined message
    DELIVERY = "delivery"  # the forwarder's outcome for a message (verdict: Delivery)
    BOUNCE = "bounce"  # a DSN was queued for the sender
    SIGUPDATE = "sigupdate"  # a signature update or check (verdict: SigOutcome)


class OutageState(StrEnum):
    """An outage event's reason."""

    DOWN = "down"
    UP = "up"


class Delivery(StrEnum):
    """A delivery event's verdict (a bounce event's is DSN)."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"
    DSN = "dsn"


class SigOutcome(StrEnum):
    """A sigupdate event's verdict."""

    UPDATED = "updated"
    CURRENT = "current"
    FAILED = "failed"
    FRESH = "fresh"  # --check: signatures young enough
    STALE = "stale"  # --check: too old
    BUSY = "busy"  # another sigupdate holds the lock

    @property
    def is_good(self) -> bool:
        """The signatures are as fresh as they can be after this run."""
        return self in (SigOutcome.UPDATED, SigOutcome.CURRENT, SigOutcome.FRESH)
