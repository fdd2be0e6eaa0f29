"""A day of events for the report tests: scan decisions, a blocked day, a hostile message."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

from scanmail import quarantine
from scanmail.events import Event, EventLog
from scanmail.spool import Envelope, Spool

DAY = date(2025, 3, 11)
AFTER = datetime(2025, 3, 12, 0, 5).timestamp()  # the cron run at 00:05 the next morning
HOSTILE_SUBJECT = "<script>document.title='pwned'</script> <img src=x onerror=alert(1)>"
HOSTILE_NAME = "<img src=x onerror=\"document.title='pwned'\">.exe"


def at(day: date, hour: int, minute: int = 0, second: float = 0) -> float:
    """A local time on a day, as a timestamp."""
    return datetime(day.year, day.month, day.day, hour, minute).timestamp() + second


def scan(
    qid: str, moment: float, reason: str = "clean", viruses: tuple[str, ...] = (),
    sender: str = "alice@outside.example", recipients: tuple[str, ...] = ("bob@corp.example",),
    attachments: tuple[str, ...] = (), size: int = 1000,
) -> Event:
    """A scan decision, as the pipeline records it."""
    verdict = "deliver" if reason == "clean" else "quarantine"
    return Event(kind="scan", qid=qid, sender=sender, recipients=recipients, size=size,
                 verdict=verdict, reason=reason, viruses=viruses, attachments=attachments,
                 scan_ms=20, time=moment)


def record_day(events: EventLog, day: date, clean: int = 0, **blocked: int) -> None:
    """Scan events for a day: clean ones and quarantined ones by reason, spread over hours."""
    reasons = ["clean"] * clean + [r for r, n in blocked.items() for _ in range(n)]
    for i, reason in enumerate(reasons):
        viruses = ("Eicar-Test-Signature",) if reason == "infected" else ()
        moment = at(day, i % 24, (i * 7) % 60)
        events.record(scan(f"q{day:%m%d}{i:05d}", moment, reason, viruses), quiet=True)


def hostile_day(events: EventLog, spool_root: Path) -> None:
    """A blocked message whose subject, addresses and names carry markup and escapes."""
    record_day(events, DAY, clean=40, banned=3, infected=2)
    events.record(scan("smtpdhostile", at(DAY, 14), "infected", ("<b>Virus</b>\x1b[31m",),
                       sender="<script>x</script>@evil.example",
                       recipients=("victim\x1b]0;owned\x07@corp.example",),
                       attachments=(HOSTILE_NAME, "invoice\u202efdp.exe", "x" * 300)),
                  quiet=True)
    quarantine_message(spool_root, "smtpdhostile", HOSTILE_SUBJECT)


def quarantine_message(spool_root: Path, qid: str, subject: str) -> None:
    """A message put in quarantine as the pipeline puts it there, with its record."""
    spool = Spool(spool_root)
    envelope = Envelope("e@evil.example", ("v@corp.example",))
    path = spool.write("incoming", envelope, [b"Subject: x\r\n\r\nbody\r\n"], qid=qid)
    record = quarantine.Record(qid=qid, reason="infected", time=time.time(),
                               sender=envelope.sender, recipients=envelope.recipients,
                               size=20, subject=subject)
    quarantine.store(spool, path, record, None)
