"""Decisions that move nothing: `scanmail check`, the dry run, and the rescan on release."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from scanmail.config import Config
from scanmail.errors import MalformedSpoolFile, SpoolError
from scanmail.events import EventLog
from scanmail.quarantine import Vet
from scanmail.scan.decide import Decision
from scanmail.scan.rules import Rules, load_rules
from scanmail.scan.runner import Gateway
from scanmail.scan.scanner import make_scanner
from scanmail.spool import Envelope, SpoolFile, read_spool_file
from scanmail.verdict import Reason, Verdict


@dataclass(frozen=True)
class Inspection:
    """A decision made without moving anything: for `scanmail check` and dry runs."""

    path: Path
    decision: Decision
    names: tuple[str, ...]
    defects: tuple[str, ...]

    def describe(self) -> str:
        """One line: file, verdict, reason and why (virus, pattern or limit)."""
        decision = self.decision
        why = ", ".join(decision.viruses) or decision.detail
        line = f"{self.path.name}: {decision.verdict.value} {decision.reason.value}"
        return f"{line} ({why})" if why else line


def _as_spool_file(path: Path) -> SpoolFile:
    """A spool file, or a plain RFC 5322 message (.eml) read with an empty envelope."""
    try:
        return read_spool_file(path)
    except MalformedSpoolFile:
        with open(path, "rb") as handle:
            head = handle.read(5)
        if head.startswith((b"FROM ", b"RCPT ", b"SENT ")):
            raise
        size = path.stat().st_size
        return SpoolFile(path, Envelope("", ()), 0, size)


class Inspector:
    """Decides files one by one with the pass's rules and scanner, moving nothing."""

    def __init__(self, config: Config, rules: Rules | None = None) -> None:
        self.config = config
        self.rules = rules if rules is not None else load_rules(config.etc_dir)
        self.scanner = make_scanner(config)

    def inspect(self, path: Path) -> Inspection:
        """Decide one file; raise ScannerUnavailable or ScanFailed if the scanner cannot."""
        try:
            spool_file = _as_spool_file(path)
        except MalformedSpoolFile as exc:
            decision = Decision(Verdict.QUARANTINE, Reason.MALFORMED, detail=str(exc))
            return Inspection(path, decision, (), ())
        except OSError as exc:
            raise SpoolError(f"{path}: cannot read: {exc.strerror}") from exc
        with tempfile.TemporaryDirectory(prefix="scanmail-check-") as tmp:
            workdir = Path(tmp) / f"{path.name}_d"
            workdir.mkdir(mode=0o700)
            with EventLog.nowhere() as events:
                gateway = Gateway(self.config, self.rules, self.scanner, events)
                explosion, decision = gateway.judge.decide(spool_file, workdir)
        return Inspection(path, decision, tuple(explosion.names), tuple(explosion.defects))


def rescanner(config: Config) -> Vet:
    """A Vet that scans again with today's signatures, decoding as the pass does.

    The name rules (matches.bad) are not applied again: a release is the admin overruling
    them, and the question left is whether the scanner objects (an encrypted member is
    no objection then: the admin released it knowing it cannot be scanned).
    """
    inspector = Inspector(replace(config, scan_policy="all", encrypted_archives="deliver"))
    inspector.rules = Rules(bad=(), doc=inspector.rules.doc)

    def vet(path: Path) -> str | None:
        decision = inspector.inspect(path).decision
        if decision.verdict is Verdict.DELIVER:
            return None
        why = ", ".join(decision.viruses) or decision.detail
        return f"{decision.reason.value} ({why})" if why else decision.reason.value

    return vet
