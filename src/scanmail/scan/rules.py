"""Rules: the matches.bad / matches.doc pattern lists, and the names they hit."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scanmail.errors import ConfigError


@dataclass(frozen=True)
class Pattern:
    """One pattern line: the compiled regex and where it came from (file:line)."""

    regex: re.Pattern[str]
    text: str
    where: str


@dataclass(frozen=True)
class Hit:
    """A pattern that matched an attachment name."""

    pattern: Pattern
    name: str

    def describe(self) -> str:
        return f"{self.name!r} matched {self.pattern.where}: {self.pattern.text}"


@dataclass(frozen=True)
class Rules:
    """The two lists: banned names, and names that make a message suspect."""

    bad: tuple[Pattern, ...]
    doc: tuple[Pattern, ...]

    def banned(self, names: Iterable[str]) -> Hit | None:
        return first_hit(self.bad, names)

    def suspect(self, names: Iterable[str]) -> Hit | None:
        return first_hit(self.doc, names)


def load_patterns(path: Path) -> tuple[Pattern, ...]:
    """Read a pattern file; a missing file is an empty list, a bad line a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    patterns = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            regex = re.compile(stripped, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"{path}:{number}: invalid regular expression: {exc}") from None
        patterns.append(Pattern(regex, stripped, f"{path.name}:{number}"))
    return tuple(patterns)


def load_rules(etc_dir: Path) -> Rules:
    """matches.bad and matches.doc from the spool's etc folder."""
    return Rules(load_patterns(etc_dir / "matches.bad"), load_patterns(etc_dir / "matches.doc"))


def first_hit(patterns: Iterable[Pattern], names: Iterable[str]) -> Hit | None:
    """The first pattern matching 'filename=<name>' for any name (the seed's grep form)."""
    subjects = [(name, "filename=" + name) for name in names]
    for pattern in patterns:
        for name, subject in subjects:
            if pattern.regex.search(subject):
                return Hit(pattern, name)
    return None
