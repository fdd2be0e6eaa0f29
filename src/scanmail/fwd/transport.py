"""The relay transport: delivers one message to the internal mail server by SMTP or sendmail."""

from __future__ import annotations

import contextlib
import re
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from scanmail import dsnparams
from scanmail.config import Config
from scanmail.fwd.bounded import BoundedSMTP
from scanmail.fwd.origin import read_origin
from scanmail.spool import SpoolFile, iter_message

SEND_CHUNK = 64 << 10
# sendmail exit codes that are about the message, not the MTA (sysexits.h): a bounce.
# Everything else, EX_TEMPFAIL above all, is retried: a broken local MTA must not bounce mail.
SENDMAIL_PERMANENT = frozenset({65, 67, 68, 77})  # EX_DATAERR, EX_NOUSER, EX_NOHOST, EX_NOPERM
_BARE_CR = re.compile(rb"\r(?!\n)")


@dataclass(frozen=True)
class Reply:
    """An SMTP reply (or one made up for a local failure)."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def is_ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_permanent(self) -> bool:
        """5xx; anything else that is not success (4xx, garbage, a lost line) is retried."""
        return 500 <= self.code < 600


@dataclass
class Attempt:
    """What the relay said about each recipient tried in one transaction."""

    delivered: list[str] = field(default_factory=list)
    deferred: dict[str, Reply] = field(default_factory=dict)
    failed: dict[str, Reply] = field(default_factory=dict)
    accepted: Reply | None = None  # the relay's answer to the data, e.g. "250 ... queued as 4Xyz"
    dsn_passed: bool = False  # the relay offered DSN and got NOTIFY/ORCPT/RET/ENVID
    relay: str = ""  # where it was tried: host:port, or the sendmail command ("" if nowhere)
    replies: dict[str, Reply] = field(default_factory=dict)  # each RCPT TO's answer, in order
    data: Reply | None = None  # the answer to DATA: its refusal, or the one after the data

    def refuse(self, recipients: Sequence[str], reply: Reply) -> Attempt:
        """Record the same non-success reply for several recipients."""
        target = self.failed if reply.is_permanent else self.deferred
        for rcpt in recipients:
            target[rcpt] = reply
        return self


class RelayDown(Exception):
    """The relay (or local MTA) cannot be reached at all: stop this pass, retry next time."""


class Transport(Protocol):
    """Delivers one message to some recipients; keeps its connection between calls."""

    name: str  # the relay's host, for a DSN's Remote-MTA
    relay: str  # where mail goes, for the log: host:port, or the sendmail command

    def deliver(self, message: SpoolFile, recipients: Sequence[str]) -> Attempt: ...

    def close(self) -> None: ...


def open_transport(config: Config) -> Transport:
    """The transport the config names: FWD_SENDMAIL if set, else SMTP to RELAY_HOST."""
    if config.fwd_sendmail:
        return SendmailTransport(config)
    return SmtpTransport(config)


def relay_address(config: Config) -> str:
    """Where the forwarder delivers, as the log names it: host:port ([v6]:port), or sendmail."""
    if config.fwd_sendmail:
        return config.fwd_sendmail[0]
    host = config.relay_host
    return f"[{host}]:{config.relay_port}" if ":" in host else f"{host}:{config.relay_port}"


def is_8bit(message: SpoolFile) -> bool:
    """The message has bytes outside ASCII (needs BODY=8BITMIME)."""
    return any(not chunk.isascii() for chunk in iter_message(message))


def data_chunks(message: SpoolFile) -> Iterator[bytes]:
    """The message as SMTP DATA: CRLF line ends, dot-stuffed (RFC 5321 4.5.2), final dot."""
    out: list[bytes] = []
    size = 0
    with message.open_message() as handle:
        for raw in handle:
            line = raw if raw.endswith(b"\r\n") else raw.rstrip(b"\n") + b"\r\n"
            if b"\r" in line[:-2]:
                # A bare CR ends a line for some servers: "\r.\r" would end DATA there and
                # smuggle what follows as a second message (issue 14, item 3). Each bare CR
                # becomes a line end, and every line it makes is dot-stuffed on its own.
                pieces = _BARE_CR.sub(b"\r\n", line[:-2]).split(b"\r\n")
            else:
                pieces = [line[:-2]]
            for piece in pieces:
                if piece.startswith(b"."):
                    piece = b"." + piece
                out.append(piece + b"\r\n")
                size += len(piece) + 2
            if size >= SEND_CHUNK:
                yield b"".join(out)
                out, size = [], 0
    out.append(b".\r\n")
    yield b"".join(out)


def _address(address: str) -> bytes:
    return address.encode("utf-8", "surrogateescape")


def _rcpt_params(dsn: dsnparams.DsnParams | None, rcpt: str) -> bytes:
    """NOTIFY and ORCPT as the sender gave them, for a relay that offers DSN."""
    if dsn is None:
        return b""
    given = dsn.rcpt(rcpt)
    out = b""
    if given.notify:
        out += b" NOTIFY=" + ",".join(given.notify).encode("ascii")
    if given.orcpt:
        out += b" ORCPT=" + given.orcpt.encode("ascii")
    return out


def _read_reply(smtp: smtplib.SMTP) -> Reply:
    code, text = smtp.getreply()
    return Reply(code, text.decode("utf-8", "replace").replace("\n", " "))


class _StaleConnection(smtplib.SMTPServerDisconnected):
    """A reused connection was closed by the server before the transaction began."""


class SmtpTransport:
    """SMTP to RELAY_HOST:RELAY_PORT, one connection reused for several messages."""

    def __init__(self, config: Config) -> None:
        self.host = config.relay_host
        self.port = config.relay_port
        self.helo = config.hostname
        self.timeout = config.smtp_timeout
        self.deadline = config.fwd_deadline
        self.var = config.var_dir
        self.name = self.host
        self.relay = relay_address(config)
        self.smtp: BoundedSMTP | None = None

    def _connect(self, deadline: float) -> BoundedSMTP:
        smtp = BoundedSMTP(local_hostname=self.helo, timeout=self.timeout)
        smtp.deadline = deadline
        try:
            code, text = smtp.connect(self.host, self.port)
            if code != 220:
                raise RelayDown(f"{self.host}:{self.port} greets with {code} {text!r}")
            code, text = smtp.ehlo()
            if code != 250:
                code, text = smtp.helo()
                if code != 250:
                    raise RelayDown(f"{self.host}:{self.port} refuses HELO: {code}")
        except (OSError, smtplib.SMTPException) as exc:
            smtp.close()
            raise RelayDown(f"{self.host}:{self.port}: {exc}") from exc
        except RelayDown:
            smtp.close()
            raise
        return smtp

    def close(self) -> None:
        """QUIT politely if the connection is still there."""
        if self.smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self.smtp.quit()
            self.smtp.close()
            self.smtp = None

    def _drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    def deliver(self, message: SpoolFile, recipients: Sequence[str]) -> Attempt:
        """One transaction; a stale reused connection is replaced once, transparently."""
        deadline = time.monotonic() + self.deadline  # FWD_DEADLINE: the whole transaction
        for _ in range(2):
            reused = self.smtp is not None
            if self.smtp is None:
                self.smtp = self._connect(deadline)
            self.smtp.deadline = deadline
            try:
                return self._transaction(self.smtp, message, recipients)
            except (OSError, smtplib.SMTPException) as exc:
                self._drop()
                if not (reused and isinstance(exc, _StaleConnection)):
                    lost = Reply(451, f"4.4.2 connection lost: {exc}")
                    return Attempt(relay=self.relay).refuse(recipients, lost)
            finally:
                if self.smtp is not None:
                    self.smtp.deadline = None
        raise AssertionError("unreachable")

    def _command(self, smtp: smtplib.SMTP, line: bytes) -> Reply:
        smtp.send(line + b"\r\n")
        return _read_reply(smtp)

    def _transaction(self, smtp: smtplib.SMTP, message: SpoolFile, rcpts: Sequence[str]) -> Attempt:
        sender = message.envelope.sender
        attempt = Attempt(relay=self.relay)
        eight_bit = is_8bit(message)
        utf8 = not all(a.isascii() for a in (sender, *rcpts))
        params = b""
        if smtp.has_extn("size"):
            params += b" SIZE=%d" % message.message_size
        if eight_bit and smtp.has_extn("8bitmime"):
            params += b" BODY=8BITMIME"
        if (utf8 or eight_bit) and smtp.has_extn("smtputf8"):
            params += b" SMTPUTF8"
        elif utf8:
            return attempt.refuse(rcpts, Reply(553, "5.6.7 The relay does not support SMTPUTF8"))
        dsn = dsnparams.load(self.var, message.qid) if smtp.has_extn("dsn") else None
        if dsn is not None and dsn.ret:
            params += b" RET=" + dsn.ret.encode("ascii")
        if dsn is not None and dsn.envid:
            params += b" ENVID=" + dsn.envid.encode("ascii")
        try:
            self._xforward(smtp, message)
            reply = self._command(smtp, b"MAIL FROM:<" + _address(sender) + b">" + params)
        except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _StaleConnection(str(exc)) from exc
        if not reply.is_ok:
            return self._abort(smtp, attempt.refuse(rcpts, reply), reply)
        accepted: list[str] = []
        for rcpt in rcpts:
            line = b"RCPT TO:<" + _address(rcpt) + b">" + _rcpt_params(dsn, rcpt)
            reply = self._command(smtp, line)
            attempt.replies[rcpt] = reply
            if reply.is_ok:
                accepted.append(rcpt)
            else:
                attempt.refuse([rcpt], reply)
        if not accepted:
            return self._abort(smtp, attempt, reply)
        reply = self._command(smtp, b"DATA")
        if reply.code != 354:
            attempt.data = reply
            return self._abort(smtp, attempt.refuse(accepted, reply), reply)
        for chunk in data_chunks(message):
            smtp.send(chunk)
        reply = attempt.data = _read_reply(smtp)
        if reply.is_ok:
            attempt.delivered = accepted
            attempt.accepted = reply
            attempt.dsn_passed = dsn is not None
        else:
            attempt.refuse(accepted, reply)
        if reply.code == 421:
            self._drop()
        return attempt

    def _xforward(self, smtp: smtplib.SMTP, message: SpoolFile) -> None:
        """Tell a relay that offers XFORWARD who the original client was (Postfix logs it)."""
        offered = smtp.esmtp_features.get("xforward")
        if offered is None:
            return
        origin = read_origin(message)
        if origin is None:
            return
        attributes = origin.attributes(offered)
        if attributes:
            # A refusal changes nothing: the relay then logs us as the client.
            self._command(smtp, ("XFORWARD " + " ".join(attributes)).encode("ascii"))

    def _abort(self, smtp: smtplib.SMTP, attempt: Attempt, reply: Reply) -> Attempt:
        """End a failed transaction with RSET, or drop the connection if that fails."""
        if reply.code == 421:
            self._drop()
            return attempt
        try:
            if not self._command(smtp, b"RSET").is_ok:
                self._drop()
        except (OSError, smtplib.SMTPException):
            self._drop()
        return attempt


class SendmailTransport:
    """Hands each message to a local MTA, as smtpfwdd did: sendmail -i -f FROM -- RCPTS."""

    def __init__(self, config: Config) -> None:
        self.command = config.fwd_sendmail
        self.timeout = config.smtp_timeout
        self.name = "localhost"
        self.relay = relay_address(config)

    def close(self) -> None:
        pass

    def deliver(self, message: SpoolFile, recipients: Sequence[str]) -> Attempt:
        """Run the command; its exit status decides for every recipient at once."""
        argv = [*self.command, "-i", "-f", message.envelope.sender or "<>", "--", *recipients]
        with tempfile.TemporaryFile() as errors:
            try:
                process = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
                )
            except OSError as exc:
                raise RelayDown(f"{self.command[0]}: {exc.strerror}") from exc
            assert process.stdin is not None
            try:
                with message.open_message() as handle, process.stdin:
                    for line in handle:  # the local MTA wants local (LF) line ends
                        process.stdin.write(line[:-2] + b"\n" if line.endswith(b"\r\n") else line)
            except BrokenPipeError:
                pass
            try:
                status = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                reply = Reply(451, f"4.4.2 {self.command[0]} timed out")
                return Attempt(relay=self.relay).refuse(recipients, reply)
            errors.seek(0)
            said = errors.read(400).decode("utf-8", "replace").strip().splitlines()
        text = f"{self.command[0]} exited with {status}" + (f": {said[0]}" if said else "")
        if status == 0:
            return Attempt(delivered=list(recipients), relay=self.relay)
        if status in SENDMAIL_PERMANENT:
            return Attempt(relay=self.relay).refuse(recipients, Reply(550, f"5.0.0 {text}"))
        return Attempt(relay=self.relay).refuse(recipients, Reply(451, f"4.0.0 {text}"))
