"""Recipient verification at RCPT, so unknown users are refused, never bounced (issue 12).

A gateway that accepts any local part and bounces later, when the internal server says
`550 5.1.1 User unknown`, sends its bounces to forged senders: backscatter. Two ways to
know the users before the 250:

- RECIPIENTS_FILE: one address or `@domain` a line (`#` comments), reread when it changes;
- a probe of the internal server (RELAY_HOST:RELAY_PORT), as Postfix's
  reject_unverified_recipient does: EHLO, MAIL FROM:<>, RCPT TO:<address> (one connection
  and transaction for up to PROBE_BATCH probes), RSET, QUIT; nothing is ever queued.
  A 2xx answer is cached for PROBE_POSITIVE seconds, a 5xx for PROBE_NEGATIVE; a 4xx or no
  answer is not cached and the client is told 450 4.1.1 to try again later.

RECIPIENT_VERIFY=auto (the default) uses the file when RECIPIENTS_FILE is set, else the
probe when LOCAL_DOMAINS is set; `file`, `probe` and `no` choose outright.
"""

from __future__ import annotations

import contextlib
import logging
import os
import smtplib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from scanmail.config import Config

log = logging.getLogger(__name__)

PROBE_POSITIVE = 24 * 3600.0  # a known user stays known for a day
PROBE_NEGATIVE = 3600.0  # an unknown one is asked about again after an hour
PROBE_TIMEOUT = 10.0  # seconds the internal server has to answer each step of a probe
PROBE_BATCH = 50  # RCPT probes in one MAIL FROM:<> transaction
PROBE_IDLE = 10.0  # seconds an idle probe connection is kept
CACHE_MAX = 100_000  # entries; the oldest half goes when it is full
FILE_CHECK = 1.0  # seconds between two looks at RECIPIENTS_FILE's mtime

UNKNOWN = "550 5.1.1 User unknown in local recipient table"
TEMPFAIL = "450 4.1.1 Recipient address verification failed for now; try again later"


def normal(address: str) -> str:
    """The form addresses are compared in: lower case (as Postfix's tables), no final dot."""
    return address.lower().rstrip(".")


class RecipientsFile:
    """RECIPIENTS_FILE, reread when its mtime, size or inode changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.stamp: tuple[int, int, int] | None = None
        self.checked = 0.0
        self.addresses: frozenset[str] = frozenset()
        self.domains: frozenset[str] = frozenset()
        self.error = ""

    def _reload(self) -> None:
        now = time.monotonic()
        if now - self.checked < FILE_CHECK and self.stamp is not None:
            return
        self.checked = now
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self.stamp:
                return
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            if not self.error:
                log.error("RECIPIENTS_FILE %s: cannot read: %s (recipients tempfailed)",
                          self.path, exc.strerror)
            self.error = f"cannot read {self.path}: {exc.strerror}"
            self.stamp = None
            return
        addresses, domains = set(), set()
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("@"):
                domains.add(line[1:].lower().rstrip("."))
            else:
                addresses.add(normal(line))
        self.addresses, self.domains = frozenset(addresses), frozenset(domains)
        self.stamp, self.error = stamp, ""
        log.info("RECIPIENTS_FILE %s: %d addresses, %d domains", self.path,
                 len(addresses), len(domains))

    def verdict(self, address: str) -> str | None:
        """None if listed, else the refusal (450 while the file cannot be read)."""
        with self.lock:
            self._reload()
            if self.error and self.stamp is None and not self.addresses and not self.domains:
                return TEMPFAIL
            if normal(address) in self.addresses:
                return None
            if address.rpartition("@")[2].lower().rstrip(".") in self.domains:
                return None
        return UNKNOWN


@dataclass
class Cached:
    reply: str | None
    until: float


class Prober:
    """Asks the internal server about each recipient, caching its answers."""

    def __init__(self, host: str, port: int, helo: str) -> None:
        self.host = host
        self.port = port
        self.helo = helo
        self.clock = time.monotonic
        self.cache: dict[str, Cached] = {}
        self.lock = threading.Lock()
        self.connection_lock = threading.Lock()
        self.smtp: smtplib.SMTP | None = None
        self.used = 0
        self.last = 0.0

    def lookup(self, address: str) -> Cached | None:
        key = normal(address)
        with self.lock:
            entry = self.cache.get(key)
            if entry is not None and entry.until > self.clock():
                return entry
        return None

    def verdict(self, address: str) -> str | None:
        """None if the internal server accepts the recipient, else the reply (blocking)."""
        entry = self.lookup(address)
        if entry is not None:
            return entry.reply
        code, text = self._probe(address)
        if 200 <= code < 300:
            reply, ttl = None, PROBE_POSITIVE
        elif 500 <= code < 600:  # the internal server's own words, e.g. 550 5.1.1 ...
            reply, ttl = (f"{code} {text}"[:300] if text else UNKNOWN), PROBE_NEGATIVE
        else:
            log.warning("qid=- event=probe rcpt=<%s> verdict=tempfail reply=%r",
                        address, f"{code} {text}"[:200])
            return TEMPFAIL
        with self.lock:
            if len(self.cache) >= CACHE_MAX:
                for key in sorted(self.cache, key=lambda k: self.cache[k].until)[: CACHE_MAX // 2]:
                    del self.cache[key]
            self.cache[normal(address)] = Cached(reply, self.clock() + ttl)
        return reply

    def _probe(self, address: str) -> tuple[int, str]:
        """The internal server's answer to RCPT TO:<address>; (0, why) if it gave none.

        One connection and one MAIL FROM:<> serve many probes (RSET every PROBE_BATCH, and
        a new connection after PROBE_IDLE seconds): a connection and a queue file per
        probe cost Postfix far more than a RCPT. A connection that fails is replaced once.
        """
        with self.connection_lock:
            for attempt in range(2):
                try:
                    smtp = self._transaction()
                    smtp.putcmd("RCPT TO:<" + address + ">")
                    code, reply = smtp.getreply()
                    self.used += 1
                    self.last = time.monotonic()
                    return code, reply.decode("utf-8", "replace").replace("\n", " ")
                except (OSError, smtplib.SMTPException, UnicodeError, _NoMail) as exc:
                    self._close()
                    if attempt or isinstance(exc, _NoMail):
                        return 0, str(exc)
        return 0, "unreachable"

    def _transaction(self) -> smtplib.SMTP:
        """An open connection inside a MAIL FROM:<> transaction, fresh when due."""
        now = time.monotonic()
        if self.smtp is not None and (now - self.last > PROBE_IDLE or self.used >= PROBE_BATCH):
            self._close()
        if self.smtp is None:
            smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.helo,
                                timeout=PROBE_TIMEOUT)
            try:
                code, _ = smtp.ehlo()
                if code != 250:
                    smtp.helo()
                code, _ = smtp.mail("<>")
                if code != 250:
                    raise _NoMail(f"MAIL FROM:<> answered {code}")
            except BaseException:
                smtp.close()
                raise
            self.smtp, self.used = smtp, 0
        return self.smtp

    def _close(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self.smtp.rset()
                self.smtp.quit()
            self.smtp.close()
            self.smtp = None

    def close(self) -> None:
        with self.connection_lock:
            self._close()


class _NoMail(Exception):
    """The internal server refused MAIL FROM:<> (so no probe can be answered)."""


class Verifier:
    """The receiver's recipient check: a file, a probe, or nothing."""

    def __init__(self, mode: str, file: RecipientsFile | None, prober: Prober | None) -> None:
        self.mode = mode
        self.file = file
        self.prober = prober

    @classmethod
    def from_config(cls, config: Config) -> Verifier:
        mode = config.recipient_verify
        if mode == "auto":
            if config.recipients_file:
                mode = "file"
            elif config.local_domains and not config.fwd_sendmail:
                mode = "probe"
            else:
                mode = "no"
        file = RecipientsFile(Path(config.recipients_file)) if mode == "file" else None
        prober = (Prober(config.relay_host, config.relay_port, config.hostname)
                  if mode == "probe" else None)
        return cls(mode, file, prober)

    @property
    def blocking(self) -> bool:
        """The check may wait on the network (run it in a thread)."""
        return self.prober is not None

    def close(self) -> None:
        if self.prober is not None:
            self.prober.close()

    def verdict(self, address: str) -> str | None:
        """None if the recipient exists, else the SMTP reply (550 5.1.1 or 450 4.1.1)."""
        if self.file is not None:
            return self.file.verdict(address)
        if self.prober is not None:
            return self.prober.verdict(address)
        return None
