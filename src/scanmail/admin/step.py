"""Step: one thing `scanmail setup` did or found, said in one line.

setup is run again and again (it is the upgrade too): each step says whether it changed
anything, so a run that changes nothing can say so, and one that does names each change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """A line for the admin, and whether the system is different because of it."""

    line: str
    changed: bool = False


def note(line: str) -> Step:
    """A line that reports or advises and changed nothing."""
    return Step(line, changed=False)


def done(line: str) -> Step:
    """A line that reports a change."""
    return Step(line, changed=True)
