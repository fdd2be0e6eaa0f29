"""Delivery status notifications: RFC 3464 multipart/report messages for failed recipients."""

from __future__ import annotations

import email.utils
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scanmail.dsnparams import decode_xtext
from scanmail.notify import plain

MAX_HEADERS = 64 << 10  # the returned header block is cut here; the body is never returned
_STATUS = re.compile(r"([245])\d\d[ -]([245])(\.\d{1,3}\.\d{1,3})\b")  # RFC 2034


@dataclass(frozen=True)
class Failure:
    """One recipient that could not be delivered, with the reply that said so."""

    recipient: str
    reply: str  # e.g. "550 5.1.1 <bob@corp.example>: no such user"
    remote: str = ""  # the server that answered, if any

    @property
    def status(self) -> str:
        """The RFC 3463 status code: the reply's enhanced code, else one from its class."""
        match = _STATUS.match(self.reply)
        if match and match.group(1) == match.group(2):
            return match.group(2) + match.group(3)
        return "4.0.0" if self.reply.startswith("4") else "5.0.0"


def header_block(message: bytes) -> bytes:
    """The message's header section, up to the blank line (bounded)."""
    head = message[:MAX_HEADERS]
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end >= 0:
            return head[: end + len(separator) // 2]
    return head


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape")


def _address_type(address: str) -> str:
    return "rfc822" if address.isascii() else "utf-8"  # RFC 6533 3.2 for UTF-8 addresses


def _original_recipient(orcpt: str) -> list[str]:
    """RFC 3464 2.3.1 from the sender's ORCPT=addr-type;xtext, or nothing."""
    kind, _, text = orcpt.partition(";")
    return [f"Original-Recipient: {plain(kind)}; {plain(decode_xtext(text))}"] if text else []


def build_dsn(
    hostname: str,
    sender_from: str,
    to: str,
    qid: str,
    failures: Sequence[Failure],
    original: bytes,
    arrival: float | None = None,
    envid: str | None = None,
    orcpts: Mapping[str, str] | None = None,
    action: str = "failed",
) -> bytes:
    """A complete multipart/report (report-type=delivery-status) message, CRLF line ends.

    action "relayed" (RFC 3461 4.1): a NOTIFY=SUCCESS request the relay could not take on.
    """
    relayed = action == "relayed"
    boundary = f"=_scanmail_{secrets.token_hex(12)}"
    now = email.utils.formatdate(localtime=True)
    utf8 = not (to.isascii() and all(f.recipient.isascii() for f in failures))
    headers = header_block(original)
    global_headers = utf8 or not headers.isascii()
    top = [
        f"From: Mail Delivery System <{sender_from}>",
        f"To: <{to}>",
        "Subject: " + ("Successful Mail Delivery Report" if relayed
                       else "Undelivered Mail Returned to Sender"),
        f"Date: {now}",
        f"Message-ID: {email.utils.make_msgid('dsn', domain=hostname)}",
        "Auto-Submitted: auto-replied",  # RFC 3834
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Transfer-Encoding: {'8bit' if utf8 else '7bit'}",
        "",
        f"This is the mail gateway at {hostname}.",
        "",
        *(["Your message was handed to the internal mail server for these recipients.",
           "That server does not take delivery notices, so this is the last you will get."]
          if relayed else
          ["Your message could not be delivered to the following recipients.",
           "The internal mail server's answer is shown for each of them."]),
        "",
    ]
    for failure in failures:
        top.append(f"<{failure.recipient}>:")
        top.append(f"    {plain(failure.reply)}")
        top.append("")
    top.append("The headers of your message are attached.")
    top.append("")
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    report = [
        f"--{boundary}",
        f"Content-Type: {status_type}",
        "",
        f"Reporting-MTA: dns; {hostname}",
        f"X-Scanmail-Queue-ID: {qid}",
    ]
    if envid:
        report.append(f"Original-Envelope-Id: {plain(decode_xtext(envid))}")
    if arrival is not None:
        report.append(f"Arrival-Date: {email.utils.formatdate(arrival, localtime=True)}")
    for failure in failures:
        report += [
            "",
            *_original_recipient((orcpts or {}).get(failure.recipient, "")),
            f"Final-Recipient: {_address_type(failure.recipient)}; {failure.recipient}",
            f"Action: {action}",
            f"Status: {failure.status}",
        ]
        if failure.remote:
            report.append(f"Remote-MTA: dns; {failure.remote}")
        report += [f"Diagnostic-Code: smtp; {plain(failure.reply)}", f"Last-Attempt-Date: {now}"]
    headers_type = "message/global-headers" if global_headers else "text/rfc822-headers"
    report += ["", f"--{boundary}", f"Content-Type: {headers_type}", ""]
    body = headers.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return _crlf("\n".join(top + report) + "\n") + body + _crlf(f"\n--{boundary}--\n")
