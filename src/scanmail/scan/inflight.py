"""Messages being decided: a mark per message in SPOOL/var/inflight, for poison messages.

A message that makes the pass run out of memory is killed with it (the OOM killer), and
nothing counted it against the message: it stayed first in line and killed every pass
(issue 14). So each message is marked (a count of tries) before it is decided, and the
mark is removed once it is. On a later pass a message found marked was in a pass that
died; one marked POISON_TRIES times is held aside as unchecked, as a scan failure is.
The marked messages of a pass are decided first, one at a time, so an innocent message
that only shared a pass with the poison one is not blamed a second time.

The mark needs no fsync: it guards against the process being killed, not the machine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FOLDER = "inflight"
POISON_TRIES = 2  # passes a message may die in before it is held aside


class Inflight:
    """The marks of one spool (SPOOL/var/inflight/<qid>, holding the number of tries)."""

    def __init__(self, var_dir: Path) -> None:
        self.folder = var_dir / FOLDER

    def tries(self, qid: str) -> int:
        """How many passes died while deciding qid."""
        try:
            with open(self.folder / qid, "rb") as handle:
                return int(handle.read(32).strip() or b"0")
        except (FileNotFoundError, ValueError):
            return 0

    def begin(self, qid: str) -> int:
        """Mark qid as being decided; return the number of earlier passes that died on it."""
        earlier = self.tries(qid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        try:
            fd = os.open(self.folder / qid, flags, 0o600)
        except FileNotFoundError:  # the first mark (the folder is made once, not per message)
            self.folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.folder / qid, flags, 0o600)
        try:
            os.write(fd, f"{earlier + 1}\n".encode())
        finally:
            os.close(fd)
        return earlier

    def end(self, qid: str) -> None:
        """qid is decided (whatever the outcome): the pass did not die on it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / qid)

    def marked(self) -> set[str]:
        """The messages a dead pass was deciding."""
        try:
            return set(os.listdir(self.folder))
        except FileNotFoundError:
            return set()

    def prune(self, present: set[str]) -> None:
        """Forget marks of messages no longer in incoming."""
        for qid in self.marked() - present:
            self.end(qid)
