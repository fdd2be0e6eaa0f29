"""PassReport: what one forwarder pass over outgoing did, and its line for a person.

The forwarder's workers count into it (under its lock); `scanmail-fwd --once` shows
headline() on a terminal and turns what it says into an exit status (forwarder.check).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from scanmail.untrusted import one_line


@dataclass
class PassReport:
    """The outcome of one pass over outgoing."""

    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    waiting: int = 0
    queued: int = 0  # reports and alerts this pass wrote into outgoing
    relay_down: str = ""
    locked: bool = False  # another scanmail-fwd holds the lock: nothing was tried
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, verdict: str) -> None:
        with self.lock:
            setattr(self, verdict, getattr(self, verdict) + 1)

    def add(self, extra: PassReport) -> None:
        """Count in a second pass (the reports and alerts the first one wrote)."""
        self.delivered += extra.delivered
        self.deferred += extra.deferred
        self.failed += extra.failed
        self.relay_down = self.relay_down or extra.relay_down

    def headline(self) -> str:
        """The one line a hand run shows on a terminal (the CLI decides when):
        "scanmail-fwd: 2 sent, 0 deferred, 0 failed"."""
        if self.locked:
            return "scanmail-fwd: another scanmail-fwd is delivering; nothing done"
        line = (f"scanmail-fwd: {self.delivered} sent, {self.deferred} deferred, "
                f"{self.failed} failed")
        if self.waiting:
            line += f", {self.waiting} waiting for their retry time"
        if self.relay_down:
            line += f"; relay unreachable: {one_line(self.relay_down, 120)}"
        return line
