"""The original client of a spooled message, for XFORWARD to the internal server (issue 12).

scanmail-smtpd writes it in the message's first header, its own Received: field:

    Received: from HELO (NAME [ADDR]) (via ...)
    \\tby HOST (scanmail) with PROTO id QID

The forwarder reads that field back and, when the relay offers XFORWARD (Postfix with
smtpd_authorized_xforward_hosts), sends it so Postfix logs the real client, not 127.0.0.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scanmail.spool import SpoolFile

_OURS = re.compile(
    r"Received: from (?P<helo>\S+) \((?:(?P<name>[^\s\[\]()]+) )?"
    r"(?:\[(?:IPv6:)?(?P<addr>[0-9A-Fa-f.:]+)\]|unknown)\)[^\r\n]*\r?\n"
    r"\tby \S+ \(scanmail\) with (?P<proto>[A-Z0-9]+) id ",
)
_XTEXT_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"+", "="}


@dataclass(frozen=True)
class Origin:
    helo: str
    name: str | None
    addr: str | None
    proto: str

    def attributes(self, offered: str) -> list[str]:
        """XFORWARD name=value pairs the relay offered (its EHLO XFORWARD parameters)."""
        values = {
            "NAME": self.name or "[UNAVAILABLE]",
            "ADDR": self.addr or "[UNAVAILABLE]",
            "PROTO": "SMTP" if self.proto == "SMTP" else "ESMTP",
            "HELO": self.helo,
            "SOURCE": "REMOTE",
        }
        wanted = {word.upper() for word in offered.split()}
        return [f"{key}={xtext(value)}" for key, value in values.items() if key in wanted]


def xtext(value: str) -> str:
    return "".join(c if c in _XTEXT_SAFE else "".join(f"+{b:02X}" for b in c.encode())
                   for c in value)


def read_origin(message: SpoolFile) -> Origin | None:
    """The client scanmail-smtpd received the message from, or None (not ours, or unknown)."""
    with message.open_message() as handle:
        head = handle.read(2048).decode("ascii", "replace")
    # The pass may have put X-Virus-Scanned: above it; the first Received: is always ours.
    found = head.find("\nReceived:")
    start = 0 if head.startswith("Received:") else found + 1 if found >= 0 else -1
    match = _OURS.match(head, start) if start >= 0 else None
    if match is None:
        return None
    return Origin(match["helo"], match["name"], match["addr"], match["proto"])
