"""smtplib's SMTP with bounds a hostile internal server cannot stretch (issue 14, item 9).

A reply may have at most MAX_REPLY_LINES lines of at most MAX_REPLY_LINE octets, and
every read and write of one transaction must finish before its deadline (set by the
transport before MAIL FROM): an endless multi-line reply or a server trickling one byte
every few seconds ends the transaction with SMTPServerDisconnected instead of holding the
forwarder's memory or its pass for ever.
"""

from __future__ import annotations

import smtplib
import time

MAX_REPLY_LINES = 100  # Postfix's smtp client gives up far earlier; no real reply is longer
MAX_REPLY_LINE = 2048  # RFC 5321 4.5.3.1.5: 512 octets a reply line
RECV_CHUNK = 4096


class BoundedSMTP(smtplib.SMTP):
    """An SMTP client whose replies are capped and whose transaction has a deadline."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.deadline: float | None = None
        self._inbuf = b""
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _budget(self) -> float | None:
        """The socket timeout for the next read or write: the idle limit or what is left."""
        idle = self.timeout if isinstance(self.timeout, (int, float)) else None
        if self.deadline is None:
            return idle
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.close()
            raise smtplib.SMTPServerDisconnected("transaction deadline passed (FWD_DEADLINE)")
        return left if idle is None else min(idle, left)

    def connect(self, host: str = "localhost", port: int = 0,
                source_address: object = None) -> tuple[int, bytes]:
        self._inbuf = b""
        return super().connect(host, port, source_address)  # type: ignore[arg-type]

    def send(self, s: bytes | str) -> None:  # type: ignore[override]
        if self.sock is not None:
            self.sock.settimeout(self._budget())  # sendall: the timeout bounds the whole call
        super().send(s)

    def _readline(self) -> bytes:
        while True:
            end = self._inbuf.find(b"\n")
            if end >= 0:
                line, self._inbuf = self._inbuf[: end + 1], self._inbuf[end + 1 :]
                return line
            if len(self._inbuf) > MAX_REPLY_LINE:
                self.close()
                raise smtplib.SMTPServerDisconnected("reply line too long")
            if self.sock is None:
                raise smtplib.SMTPServerDisconnected("please run connect() first")
            self.sock.settimeout(self._budget())
            try:
                data = self.sock.recv(RECV_CHUNK)
            except OSError as exc:
                self.close()
                late = self.deadline is not None and time.monotonic() >= self.deadline
                why = "transaction deadline passed (FWD_DEADLINE)" if late else str(exc)
                raise smtplib.SMTPServerDisconnected(why) from exc
            if not data:
                self.close()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            self._inbuf += data

    def getreply(self) -> tuple[int, bytes]:
        """One reply, as smtplib's, but at most MAX_REPLY_LINES lines before the deadline."""
        lines: list[bytes] = []
        code = -1
        while True:
            line = self._readline()
            if len(line) > MAX_REPLY_LINE:
                self.close()
                raise smtplib.SMTPServerDisconnected("reply line too long")
            lines.append(line[4:].strip(b" \t\r\n"))
            try:
                code = int(line[:3])
            except ValueError:
                code = -1
                break
            if line[3:4] != b"-":
                break
            if len(lines) >= MAX_REPLY_LINES:
                self.close()
                raise smtplib.SMTPServerDisconnected(
                    f"reply longer than {MAX_REPLY_LINES} lines"
                )
        return code, b"\n".join(lines)

    def close(self) -> None:
        self._inbuf = b""
        super().close()
