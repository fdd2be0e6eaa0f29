"""DSN parameters (RFC 3461) kept beside a spool file: RET and ENVID of MAIL, NOTIFY and
ORCPT of each RCPT (issue 12).

The Obtuse spool format has no room for them: smtpfwdd passes everything after `RCPT `
to sendmail as one argument and stops at any line it does not know, so they cannot go on
the RCPT lines. They live in a sidecar, SPOOL/var/dsn/<qid>.json, written by the receiver
before the spool file is complete and read by the forwarder (which passes them on to a
relay that offers DSN) and by scanmail's own bounces (which honour NOTIFY, ORCPT and
ENVID). A spool file without a sidecar gets the RFC 3461 defaults (failures reported).
The forwarder removes the sidecar once the message is done; `prune` drops orphans.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

FOLDER = "dsn"
NOTIFY_WORDS = ("SUCCESS", "FAILURE", "DELAY")
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")


@dataclass(frozen=True)
class RcptParams:
    notify: tuple[str, ...] | None = None  # None: not given; ("NEVER",) or some of NOTIFY_WORDS
    orcpt: str | None = None  # as given: addr-type;xtext

    def wants(self, word: str) -> bool:
        """Whether a notice of this kind is wanted (FAILURE and DELAY by default)."""
        if self.notify is None:
            return word in ("FAILURE", "DELAY")
        return word in self.notify


@dataclass
class DsnParams:
    ret: str | None = None  # FULL or HDRS
    envid: str | None = None  # xtext, as given
    rcpts: dict[str, RcptParams] = field(default_factory=dict)

    @property
    def given(self) -> bool:
        return bool(self.ret or self.envid or self.rcpts)

    def rcpt(self, address: str) -> RcptParams:
        return self.rcpts.get(address, RcptParams())


def parse_notify(value: str) -> tuple[str, ...] | None:
    """NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY; None if malformed."""
    words = tuple(word.upper() for word in value.split(","))
    if words == ("NEVER",):
        return words
    if not words or len(set(words)) != len(words) or not set(words) <= set(NOTIFY_WORDS):
        return None
    return words


def valid_xtext(value: str, limit: int = 500) -> bool:
    return 0 < len(value) <= limit and _XTEXT.fullmatch(value) is not None


def decode_xtext(value: str) -> str:
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _path(var: Path, qid: str) -> Path:
    return var / FOLDER / f"{qid}.json"


def save(var: Path, qid: str, params: DsnParams) -> None:
    """Write the sidecar atomically (tmp + fsync + rename); nothing when nothing was given."""
    if not params.given:
        return
    folder = var / FOLDER
    folder.mkdir(mode=0o750, exist_ok=True)
    data = {
        "ret": params.ret, "envid": params.envid,
        "rcpts": {a: {"notify": list(p.notify) if p.notify else None, "orcpt": p.orcpt}
                  for a, p in params.rcpts.items()},
    }
    tmp = folder / f".{qid}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, _path(var, qid))


def load(var: Path, qid: str) -> DsnParams:
    """The sidecar's parameters, or the defaults if there is none (or it cannot be read)."""
    try:
        data = json.loads(_path(var, qid).read_text(encoding="utf-8"))
        rcpts = {
            str(a): RcptParams(tuple(p["notify"]) if p.get("notify") else None, p.get("orcpt"))
            for a, p in dict(data.get("rcpts") or {}).items()
        }
        return DsnParams(data.get("ret"), data.get("envid"), rcpts)
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return DsnParams()


def drop(var: Path, qid: str) -> None:
    with contextlib.suppress(OSError):
        _path(var, qid).unlink()


def prune(var: Path, live: set[str], older_than: float) -> None:
    """Remove sidecars of messages no longer in a live folder, once older than that (s)."""
    now = time.time()
    try:
        entries = list(os.scandir(var / FOLDER))
    except OSError:
        return
    for entry in entries:
        qid = entry.name.removesuffix(".json").lstrip(".").removesuffix(".tmp")
        if qid in live:
            continue
        with contextlib.suppress(OSError):
            if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                os.unlink(entry.path)
