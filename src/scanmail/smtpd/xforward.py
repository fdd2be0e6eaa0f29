"""Postfix's XFORWARD (XFORWARD_README): the original client of a message a trusted MTA hands on.

As an after-queue content filter, every message comes from Postfix on 127.0.0.1; with
XFORWARD, Postfix tells the filter who the real client was, and scanmail keeps that in its
Received: header, its log and its events, and passes it on to the re-entry smtpd. Only
clients in RELAY_NETWORKS may use it; attributes last until the end of the transaction.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
EHLO_LINE = "XFORWARD " + " ".join(ATTRIBUTES)
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
_SAFE = re.compile(r"[^A-Za-z0-9._:\[\]-]")
_UNAVAILABLE = {"[UNAVAILABLE]", "[TEMPUNAVAIL]"}


@dataclass
class Forwarded:
    """What XFORWARD said about the original client (None: not said, or unavailable)."""

    name: str | None = None
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    proto: str | None = None
    helo: str | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.name, self.addr, self.proto, self.helo))


def xtext_decode(value: str) -> str:
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)


def apply(forwarded: Forwarded, arg: str) -> str | None:
    """Add one XFORWARD command's attributes; an error reply if it is malformed, else None."""
    pairs = arg.split()
    if not pairs:
        return "501 5.5.4 Syntax: XFORWARD attribute=value..."
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        key = key.upper()
        if not eq or key not in ATTRIBUTES:
            return f"501 5.5.4 Bad XFORWARD attribute: {_SAFE.sub('?', key)[:20]}"
        value = xtext_decode(raw)
        if value in _UNAVAILABLE:
            continue
        cleaned = _SAFE.sub("?", value)[:255]
        if key == "NAME":
            forwarded.name = cleaned
        elif key == "HELO":
            forwarded.helo = cleaned
        elif key == "PROTO":
            forwarded.proto = "ESMTP" if cleaned.upper() == "ESMTP" else "SMTP"
        elif key == "ADDR":
            text = value[5:] if value.upper().startswith("IPV6:") else value
            try:
                forwarded.addr = ipaddress.ip_address(text)
            except ValueError:
                return "501 5.5.4 Bad XFORWARD ADDR"
    return None
