"""Mail loops: counting Received: trace fields in a message's header (RFC 5321 6.3).

A gateway that relays to itself (LISTEN and RELAY_HOST:RELAY_PORT the same socket) adds
one Received: each time round; MAX_HOPS of them mean a loop. The receiver refuses such a
message at DATA (554 5.4.6) and the forwarder fails one already spooled with a report.
"""

from __future__ import annotations

from collections.abc import Iterable

HEADER_LIMIT = 1 << 20  # a header section longer than this is not read further for hops


class HopCounter:
    """Counts Received: fields line by line while the header section lasts."""

    def __init__(self) -> None:
        self.hops = 0
        self.in_header = True
        self.seen = 0

    def feed(self, line: bytes) -> None:
        """One line of the message, with its line end."""
        if not self.in_header:
            return
        self.seen += len(line)
        if line in (b"\r\n", b"\n") or self.seen > HEADER_LIMIT:
            self.in_header = False
        elif line[:9].lower() == b"received:":
            self.hops += 1


def count_hops(lines: Iterable[bytes]) -> int:
    """The number of Received: fields in the header section of these lines."""
    counter = HopCounter()
    for line in lines:
        counter.feed(line)
        if not counter.in_header:
            break
    return counter.hops


def loop_reply(hops: int, max_hops: int) -> str:
    """The text of the refusal (after the 554 code)."""
    return f"5.4.6 Too many hops: {hops} Received: headers (MAX_HOPS={max_hops}), mail loop?"
