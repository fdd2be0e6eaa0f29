"""Text that came from a message (names, addresses, subjects, replies) made safe for each sink.

One rule for every sink, decided once (issue 9): valid UTF-8 (raw 8-bit bytes become
U+FFFD), and every control character (C0, DEL, C1) and every invisible format character
(the bidirectional overrides that make "invoice\u202efdp.exe" show as "invoiceexe.pdf",
CVE-2021-42574; zero-width characters; soft hyphens) shown as '?', so a name reads as it
is and a value cannot break a log line, a record line, a mail header or a terminal.
Long values end in an ellipsis. HTML gets the same text, escaped.
"""

from __future__ import annotations

import html
import re

MAX_TEXT = 200

# Cc (C0, DEL, C1) and Cf (format) characters; Cf listed from Unicode 15's table.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)


def storable(text: str) -> str:
    """Text with raw 8-bit bytes (surrogate escapes) shown as U+FFFD, so UTF-8 can hold it."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def visible(text: str) -> str:
    """Valid UTF-8 with every control and format character shown as '?' (no length limit)."""
    return _UNSAFE.sub("?", storable(text))


def one_line(text: str, limit: int = MAX_TEXT) -> str:
    """A value for a log line, a stored record, a mail or the report: visible, bounded."""
    text = visible(text)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def for_terminal(text: str) -> str:
    """A line for the admin's terminal: visible (lines are bounded where they are built)."""
    return visible(text)


def for_html(text: object) -> str:
    """A value for the statistics page: visible and HTML-escaped, quotes too."""
    return html.escape(visible(str(text)), quote=True)
