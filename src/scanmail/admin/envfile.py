"""etc/scanmail.env as `scanmail setup` writes it: made once, then edited line by line.

The file is the admin's. A new one gets the answers and the defaults; an existing one
gets only the settings given on the command line, each on the line that already sets it
(python-dotenv takes the last of two lines, so an appended duplicate would silently win
or lose), every other line and comment kept. The result is read back with python-dotenv
and validated by Config before it replaces the old file atomically: a typo never leaves a
file that stops every command, and a crash never leaves half of one.
"""

from __future__ import annotations

import errno
import io
import os
import pwd
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from scanmail.admin.step import Step, done, note
from scanmail.config import SETTINGS, Config
from scanmail.durable import write_file
from scanmail.errors import ConfigError, SetupError
from scanmail.privileges import acting_as

ORDER = [setting.name for setting in SETTINGS]  # a new file lists them as the example does
MAX_BYTES = 1 << 20
MODE = 0o600  # it may name TLS keys and the internal server: the service user's alone
_SAFE = re.compile(r"[A-Za-z0-9@%+,./:=_-]+")
_ASSIGNS = r"^[ \t]*(?:export[ \t]+)?{name}[ \t]*="
_EXAMPLE = r"^#[ \t]*{name}="  # the default, commented out, as scanmail.env.example has it
HEADER = """\
# scanmail settings, written by `scanmail setup`; yours to edit. setup changes only the
# settings given on its command line, on the lines that set them. Every setting with its
# default and meaning: scanmail.env.example beside this file.
"""


def quote(value: str) -> str:
    """value as a .env value python-dotenv reads back unchanged."""
    if any(c in value for c in "'\\\n\r"):
        raise ConfigError(f"{value!r}: no quotes, backslashes or line ends in a setting")
    return value if _SAFE.fullmatch(value) else f"'{value}'"


def values(text: str) -> dict[str, str | None]:
    """The settings text makes, as every command will read them."""
    return dict(dotenv_values(stream=io.StringIO(text), interpolate=False))


def render(settings: Mapping[str, str], notes: Mapping[str, str]) -> str:
    """A new env file: the header, then each setting (with its note as a comment)."""
    lines = [HEADER]
    for name, value in settings.items():
        if name in notes:
            lines.append(f"# {notes[name]}\n")
        lines.append(f"{name}={quote(value)}\n")
    return "".join(lines)


def assign(text: str, settings: Mapping[str, str]) -> tuple[str, list[str]]:
    """text with each setting set on its own line; the new text and the names changed.

    A setting already in effect with that value is left alone. Otherwise the first line
    setting it is replaced and any later one (which would win) commented out; a setting no
    line sets goes after its commented default if there is one, else at the end.
    """
    lines = text.splitlines(keepends=True)
    changed: list[str] = []
    for name, value in settings.items():
        setter = re.compile(_ASSIGNS.format(name=re.escape(name)))
        at = [i for i, line in enumerate(lines) if setter.match(line)]
        if values("".join(lines)).get(name) == value:
            continue  # in effect already (duplicate lines that agree are the admin's)
        new = f"{name}={quote(value)}\n"
        if at:
            lines[at[0]] = new
            for i in at[1:]:
                lines[i] = f"# (replaced by scanmail setup, line {at[0] + 1}) {lines[i]}"
        else:
            example = re.compile(_EXAMPLE.format(name=re.escape(name)))
            after = [i for i, line in enumerate(lines) if example.match(line)]
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.insert(after[0] + 1 if after else len(lines), new)
        changed.append(name)
    return "".join(lines), changed


def read(path: Path) -> str | None:
    """The file's text, None if there is none; a link or odd file there is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SetupError(f"{path} is a symbolic link: put the file itself there") from None
        raise SetupError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SetupError(f"{path} is not a plain file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise SetupError(f"{path}: over {MAX_BYTES >> 20} MB, not a settings file")
    return data.decode("utf-8", "surrogateescape")


def validate(path: Path, text: str) -> Config:
    """The Config text makes (as the services read it: no environment), or ConfigError."""
    return Config.from_mapping(values(text), source=str(path))


def kept_mode(path: Path) -> int:
    """The mode for the file written: an existing one's, less execute and others' bits."""
    try:
        return stat.S_IMODE(os.lstat(path).st_mode) & 0o660 or MODE
    except FileNotFoundError:
        return MODE


def settle(
    path: Path, given: Mapping[str, str], defaults: Mapping[str, str],
    notes: Mapping[str, str], owner: pwd.struct_passwd,
) -> tuple[list[Step], Config]:
    """The env file made or edited as asked, as owner; what was done, and the settings now.

    Run as root: the file is read and written with owner's ids (acting_as), so what the
    service user planted in its etc/ gives root's rights to nobody.
    """
    with acting_as(owner):
        old = read(path)
        if old is None:
            fresh = {**defaults, **given}
            names = sorted(fresh, key=ORDER.index)
            text = render({name: fresh[name] for name in names}, notes)
        else:
            text, names = assign(old, given)
        if not values(text).get("RELAY_HOST"):
            raise ConfigError("--relay-host HOST[:PORT] is needed (it is not in "
                              f"{path}): the internal mail server clean mail goes to")
        config = validate(path, text)
        if old is None:
            write_file(path, text.encode("utf-8", "surrogateescape"), MODE)
            steps = [done(f"wrote {path} ({', '.join(names)})")]
            steps += [note(f"  {name}: {why}") for name, why in notes.items()]
        elif names:
            write_file(path, text.encode("utf-8", "surrogateescape"), kept_mode(path))
            steps = [done(f"{path}: kept your edits; set {', '.join(names)}")]
        else:
            steps = [note(f"{path}: already as asked")]
    return steps, config
