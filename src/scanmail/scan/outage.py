"""The scanner's outages: one mark file while it is down, one alert when it goes and comes."""

from __future__ import annotations

import threading
import time

from scanmail import notify
from scanmail.config import Config
from scanmail.events import Event, EventLog
from scanmail.spool import Spool
from scanmail.verdict import EventKind, OutageState

OUTAGE_MARK = "scanner-down"  # in SPOOL/var: its first word is when the outage began


class Outage:
    """Notes the scanner going down and coming back, once each, whatever the workers do."""

    def __init__(self, config: Config, spool: Spool, events: EventLog,
                 lock: threading.Lock) -> None:
        self.config = config
        self.spool = spool
        self.events = events
        self.lock = lock  # shared with the pass: it guards the event database too
        self.mark = config.var_dir / OUTAGE_MARK

    def down(self, why: str) -> None:
        """The scanner did not answer: mark the outage and alert, unless already marked."""
        with self.lock:
            if self.mark.exists():
                return
            self.mark.write_text(f"{time.time():.0f} {why}\n")
            self.events.record(Event(kind=EventKind.OUTAGE, reason=OutageState.DOWN, detail=why))
        notify.alert_admin(
            self.config, self.spool, "virus scanner unavailable: mail is held",
            f"The virus scanner did not answer:\n\n  {why}\n\n"
            "Incoming mail stays in the spool, unscanned and undelivered, and is retried\n"
            "on every pass. You get this alert once per outage.\n",
        )

    def up(self) -> None:
        """The scanner answered: end the outage, if there was one."""
        if not self.mark.exists():
            return
        with self.lock:
            if not self.mark.exists():
                return
            self.mark.unlink()
            self.events.record(Event(kind=EventKind.OUTAGE, reason=OutageState.UP))
        notify.alert_admin(
            self.config, self.spool, "virus scanner is back",
            "The virus scanner answers again; held mail is being scanned.\n",
        )
