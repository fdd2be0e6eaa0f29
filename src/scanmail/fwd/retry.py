"""Retry state: what the forwarder remembers about a message between tries (SPOOL/var/fwd)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scanmail import durable

RETRY_BASE = 60.0  # first retry after a minute, then 2, 4, 8 ... minutes
RETRY_MAX = 3600.0  # never wait more than an hour between tries
STATE_FOLDER = "fwd"


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the n-th temporary failure: doubling, capped at an hour."""
    return float(min(RETRY_BASE * 2 ** max(attempts - 1, 0), RETRY_MAX))


@dataclass
class RetryState:
    """What the forwarder remembers about a message between tries."""

    arrival: float
    attempts: int = 0
    next_try: float = 0.0
    last_reply: str = ""
    failed: dict[str, str] = field(default_factory=dict)  # recipient -> the reply that bounced it

    def defer(self, now: float, reply: str) -> None:
        """Count one more temporary failure and schedule the next try."""
        self.attempts += 1
        self.next_try = now + retry_delay(self.attempts)
        self.last_reply = reply


class RetryFolder:
    """The retry states of the messages in outgoing, one JSON file each."""

    def __init__(self, folder: Path, clock: Callable[[], float]) -> None:
        self.folder = folder
        self.clock = clock

    def path(self, qid: str) -> Path:
        return self.folder / f"{qid}.json"

    def load(self, path: Path) -> RetryState:
        """The message's retry state; a fresh one (arrival = the file's mtime) if none."""
        try:
            data = json.loads(self.path(path.name).read_text())
            return RetryState(
                arrival=float(data["arrival"]), attempts=int(data["attempts"]),
                next_try=float(data["next_try"]), last_reply=str(data["last_reply"]),
                failed={str(k): str(v) for k, v in dict(data["failed"]).items()},
            )
        except (OSError, ValueError, KeyError, TypeError):
            try:
                arrival = path.stat().st_mtime
            except OSError:
                arrival = self.clock()
            return RetryState(arrival=arrival)

    def save(self, qid: str, state: RetryState) -> None:
        """Write the state atomically and durably."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
        target = self.path(qid)
        durable.write_text(target, json.dumps(asdict(state)))

    def drop(self, qid: str) -> None:
        """Forget a message that is finished (delivered or failed)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(qid).unlink()

    def prune(self, present: set[str]) -> None:
        """Forget messages no longer in outgoing (delivered by another tool, or removed)."""
        if not self.folder.is_dir():
            return
        for path in self.folder.glob("*.json"):
            if path.stem not in present:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
