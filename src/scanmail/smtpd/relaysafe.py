"""Recipient forms that could relay through the internal server (issue 14 item 2, issue 12).

An untrusted client may only name a plain local address. Forms that some mail servers
still route elsewhere are refused at RCPT rather than passed on verbatim: the percent hack
(user%other@corp.example), bang paths (other!user@corp.example), quoted local parts
("user@other"@corp.example), source routes (<@corp.example:user@other>), a second @,
a domain with a trailing dot, and a non-ASCII domain that is not in IDNA normal form
(corp。example, with an ideographic full stop, is corp.example to IDNA but not to every
server).
"""

from __future__ import annotations

import contextlib

SOURCE_ROUTE = "550 5.7.1 Source routes are not accepted"
ROUTED = "550 5.7.1 Percent-hack, bang-path and quoted recipients are not accepted"
TRAILING_DOT = "553 5.1.3 Domain must not end with a dot"
NOT_NORMAL = "553 5.1.3 Domain is not in IDNA normal form"

_ROUTING = frozenset('%!@":\\')


def raw_path(arg: str) -> str:
    """The RCPT argument's path as the client wrote it, brackets included."""
    return arg.strip().partition(" ")[0]


def routing_problem(address: str, raw: str) -> str | None:
    """Why an untrusted client may not name this recipient (an SMTP reply), or None."""
    if raw.startswith("<@") or raw.startswith("@"):
        return SOURCE_ROUTE
    local, at, domain = address.rpartition("@")
    if not at:
        return None  # <postmaster>, checked elsewhere
    if _ROUTING.intersection(local) or raw.count("@") > 1 or '"' in raw:
        return ROUTED
    if domain.endswith("."):
        return TRAILING_DOT
    if not domain.isascii():
        normal = None
        with contextlib.suppress(UnicodeError):
            normal = domain.encode("idna").decode("idna")
        if normal != domain.lower():
            return NOT_NORMAL
    return None
