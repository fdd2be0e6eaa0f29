"""What every container reader reports: members, and the errors of unreadable ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

COPY = 1 << 20  # bytes a reader hands over at once


class ArchiveError(Exception):
    """A container, or a member of it, that cannot be read (a defect of the message)."""

    def __init__(self, kind: str, problem: object) -> None:
        super().__init__(f"{kind}: {problem}")
        self.kind = kind
        self.problem = str(problem)


@dataclass(frozen=True)
class Member:
    """One member of a container, as its reader found it.

    names are the member's paths inside the container as each reader or view shows them
    (unsanitized: they may hold '..', a leading '/', control characters); empty for an
    archive whose headers are encrypted, so that no name is visible.
    """

    names: list[str]
    origin: str  # the container's kind: zip | tnef | tar | 7z | iso | ...
    size: int  # as the container declares it (a hostile one may lie); 0 if unknown
    chunks: Callable[[], Iterator[bytes]] | None = None  # its bytes; None: none to read
    data: bytes | None = None  # its bytes, where the reader already holds them
    encrypted: bool = False  # its bytes cannot be read without a password
