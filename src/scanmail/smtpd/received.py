"""The Received: trace field the receiver puts on top of each message (RFC 5321 4.4)."""

from __future__ import annotations

import email.utils
import ipaddress
import re

from aiosmtpd.smtp import Envelope, Session

from scanmail.smtpd.acceptance import peer_ip
from scanmail.smtpd.xforward import Forwarded

_HELO_SAFE = re.compile(r"[^A-Za-z0-9._:\[\]-]")

def spool_sender(mail_from: str | None) -> str:
    """aiosmtpd keeps the null sender as '<>'; the spool writes it as FROM <>."""
    return "" if mail_from in (None, "<>") else str(mail_from)


def _literal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    return "unknown" if ip is None else f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]"


def received_header(
    session: Session, envelope: Envelope, hostname: str, qid: str, tls: bool,
    forwarded: Forwarded | None = None,
) -> bytes:
    """The Received: trace field (RFC 5321 4.4), with CRLF line ends like the message.

    With XFORWARD the original client is named, and the MTA that handed it on follows.
    """
    helo = _HELO_SAFE.sub("?", str(session.host_name or ""))[:100] or "unknown"
    ip = peer_ip(session.peer)
    literal = _literal(ip)
    proto = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP" if session.extended_smtp else "SMTP"
    via = ""
    if forwarded is not None and forwarded.given:
        via = f" (via {helo} {literal})"
        helo = forwarded.helo or "unknown"
        literal = _literal(forwarded.addr)
        if forwarded.name and forwarded.name != "unknown":
            literal = f"{forwarded.name} {literal}"
        proto = forwarded.proto or proto
    if tls:
        proto += "S"  # RFC 3848, RFC 6531
    lines = [
        f"Received: from {helo} ({literal}){via}",
        f"\tby {hostname} (scanmail) with {proto} id {qid}",
    ]
    date = email.utils.formatdate(localtime=True)
    if len(envelope.rcpt_tos) == 1:
        lines.append(f"\tfor <{envelope.rcpt_tos[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
