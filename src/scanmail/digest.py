"""Alert storms gathered into digests: 400 infected messages make two mails, not 400.

Alerts share a key (the quarantine reason). The first alert of a key goes at once; any
more within ALERT_DIGEST_MINUTES of the last mail sent for that key are held, one line
each, in SPOOL/var/alerts/<key>.held, and go out together as one digest (the count, the
first DIGEST_LINES lines with their quarantine ids, the command that lists them all) once
the window has passed: flush() runs at the start and end of every scanning pass.

State is two small files per key: <key>.last (when the last mail for the key was queued)
and <key>.held (appended lines). A crash may repeat a line in a digest, never lose the
message: the quarantine keeps every message whatever happens to its alert.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from scanmail import notify
from scanmail.config import Config
from scanmail.durable import write_file
from scanmail.humanize import moment, plural
from scanmail.spool import Spool
from scanmail.untrusted import one_line

log = logging.getLogger(__name__)

FOLDER = "alerts"
DIGEST_LINES = 20
_KEY = re.compile(r"[^a-z0-9_-]")


class Digest:
    """Send or hold admin alerts by key; flush() sends what waited long enough."""

    def __init__(self, config: Config, spool: Spool,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.spool = spool
        self.clock = clock
        self.window = config.alert_digest_minutes * 60.0
        self.folder = spool.var / FOLDER
        self.lock = threading.Lock()  # the pass's workers alert from several threads

    def alert(self, key: str, subject: str, text: str, line: str) -> None:
        """Queue the alert now, or hold its one-line summary for the key's next digest."""
        key = _KEY.sub("_", key.lower())[:40] or "other"
        if self.window <= 0:
            notify.alert_admin(self.config, self.spool, subject, text)
            return
        with self.lock:
            now = self.clock()
            held = self._held(key)
            if not held.exists() and now - self._last(key) >= self.window:
                notify.alert_admin(self.config, self.spool, subject, text)
                self._set_last(key, now)
                return
            self.folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(held, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, (one_line(line, 400) + "\n").encode("utf-8", "replace"))
                os.fsync(fd)
            finally:
                os.close(fd)

    def flush(self, force: bool = False) -> int:
        """Send every digest whose window has passed (all of them with force); how many."""
        sent = 0
        with self.lock:
            if not self.folder.is_dir():
                return 0
            now = self.clock()
            for held in sorted(self.folder.glob("*.held")):
                key = held.name[: -len(".held")]
                since = self._last(key)
                if not force and now - since < self.window:
                    continue
                self._send(key, held, since)
                self._set_last(key, now)
                sent += 1
        return sent

    # -- the files -------------------------------------------------------------------------

    def _held(self, key: str) -> Path:
        return self.folder / f"{key}.held"

    def _last(self, key: str) -> float:
        try:
            return float((self.folder / f"{key}.last").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0

    def _set_last(self, key: str, when: float) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        write_file(self.folder / f"{key}.last", f"{when:.3f}\n".encode())

    def _send(self, key: str, held: Path, since: float) -> None:
        with held.open("rb") as source:
            lines = source.read(1 << 20).decode("utf-8", "replace").splitlines()
        count = len(lines)
        if count:
            stamp = moment(since) if since else "the first alert"
            shown = lines[:DIGEST_LINES]
            body = [
                f"{plural(count, 'more message')} quarantined as {key} since {stamp}",
                f"(after the alert sent then; alerts are gathered for "
                f"{self.config.alert_digest_minutes:g} min, ALERT_DIGEST_MINUTES).",
                "",
                *(f"  {line}" for line in shown),
            ]
            if count > len(shown):
                body.append(f"  ... and {count - len(shown)} more")
            body += [
                "",
                "To list them all:",
                f"  scanmail quarantine list --reason {key} --since '{moment(since)}'"
                if since else f"  scanmail quarantine list --reason {key}",
                "To look at one:  scanmail quarantine show <id>",
            ]
            notify.alert_admin(self.config, self.spool,
                               f"{plural(count, 'more message')} quarantined: {key}",
                               "\n".join(body) + "\n")
        with contextlib.suppress(FileNotFoundError):
            held.unlink()
        log.info("alert digest: key=%s held=%d", key, count)
