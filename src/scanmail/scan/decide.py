"""DESIGN.md's policy, steps 2 to 7: what one message's names and scan say about it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from scanmail import mime
from scanmail.errors import SpoolError
from scanmail.scan.rules import Rules
from scanmail.scan.scanner import Scanner, Target, TooLarge
from scanmail.spool import SpoolFile
from scanmail.verdict import Reason, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What was decided for one message, and why."""

    verdict: Verdict
    reason: Reason
    viruses: tuple[str, ...] = ()
    detail: str = ""
    scanned: bool = False  # the scanner gave an answer (so it is up)


@dataclass
class Judge:
    """The rules, the scanner and the limits one message is judged by."""

    rules: Rules
    scanner: Scanner
    limits: mime.Limits
    scan_policy: str = "all"
    encrypted_archives: str = "quarantine"
    raw_scan: str = "lean"  # lean: the raw message less Explosion.cuts; whole: all of it

    def decide(self, spool_file: SpoolFile, workdir: Path) -> tuple[mime.Explosion, Decision]:
        """Walk the message into workdir, check its names, scan it; move nothing.

        Raises ScannerUnavailable or ScanFailed when the scanner gives no answer.
        """
        explosion = mime.Explosion()
        try:
            with spool_file.open_message() as handle:
                explosion = mime.Walker(workdir, self.limits).walk(handle)
        except mime.LimitExceeded as exc:
            return explosion, Decision(Verdict.QUARANTINE, Reason.UNCHECKED, detail=str(exc))
        except OSError as exc:  # the disk, not the message: leave it for the next pass
            raise SpoolError(f"{workdir}: cannot decode into: {exc.strerror}") from exc
        except Exception as exc:  # noqa: BLE001
            # Hostile input that breaks the decoder cannot be judged: never pass it.
            log.warning("qid=%s decoder failed: %r", spool_file.qid, exc)
            return explosion, Decision(
                Verdict.QUARANTINE, Reason.UNCHECKED, detail=f"cannot decode: {exc!r}"[:300]
            )
        names = explosion.names
        banned = self.rules.banned(names)
        if banned is not None:
            return explosion, Decision(Verdict.QUARANTINE, Reason.BANNED, detail=banned.describe())
        if explosion.encrypted and self.encrypted_archives == "quarantine":
            shown = ", ".join(repr(n) for n in explosion.encrypted[:3])
            more = len(explosion.encrypted) - 3
            return explosion, Decision(
                Verdict.QUARANTINE, Reason.ENCRYPTED,
                detail=f"encrypted: {shown}" + (f" and {more} more" if more > 0 else ""),
            )
        suspect = self.rules.suspect(names)
        if self.scan_policy == "suspect" and suspect is None:
            return explosion, Decision(Verdict.DELIVER, Reason.CLEAN, detail="not suspect")
        cuts = tuple(explosion.cuts) if self.raw_scan == "lean" else ()
        message = Target(spool_file.path, spool_file.body_offset, cuts)
        parts = [p.path for p in explosion.parts if p.path is not None and p.size > 0]
        try:
            result = self.scanner.scan(message, parts, workdir)
        except TooLarge as exc:
            return explosion, Decision(Verdict.QUARANTINE, Reason.UNCHECKED, detail=str(exc))
        if result.infected:
            return explosion, Decision(
                Verdict.QUARANTINE, Reason.INFECTED, result.viruses, scanned=True
            )
        detail = suspect.describe() if suspect is not None else ""
        return explosion, Decision(Verdict.DELIVER, Reason.CLEAN, detail=detail, scanned=True)
