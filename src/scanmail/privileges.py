"""Root runs act as the spool's owner: switch user before touching the spool.

A command run by root on a spool owned by the service user would leave root-owned files
there (the forwarder, running as that user, then cannot read them), and would follow
links the service user planted (to /etc/shadow, say). So every command started by root
becomes the spool's owner first, as Postfix's postsuper and Mailman's commands do:
supplementary groups of that user, then its group, then its uid, for good (no way back).

A spool owned by root (or missing, before `scanmail init`) keeps root: nothing to switch to.
`scanmail setup`, which must stay root, uses acting_as() for its edits inside the spool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

from scanmail.errors import ConfigError

log = logging.getLogger(__name__)

_started_as: list[int] = []  # the uid before a switch (who released a message)


def invoking_uid() -> int:
    """The uid this process started with, before any switch."""
    return _started_as[0] if _started_as else os.getuid()


def spool_owner(spool_dir: Path) -> pwd.struct_passwd | None:
    """The user owning spool_dir, or None if it is missing or owned by root."""
    try:
        uid = os.stat(spool_dir).st_uid
    except OSError:
        return None
    if uid == 0:
        return None
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        raise ConfigError(
            f"{spool_dir} is owned by uid {uid}, which has no user name: "
            f"run this command as that uid, or chown the spool to the service user"
        ) from None


def become(entry: pwd.struct_passwd) -> None:
    """Drop root for good: entry's groups, group and user (the order matters)."""
    os.initgroups(entry.pw_name, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir
    if os.getuid() == 0 or os.geteuid() == 0:  # pragma: no cover - the kernel refused
        raise ConfigError(f"could not drop root for {entry.pw_name}")


def act_as_spool_owner(spool_dir: Path) -> str | None:
    """Run by root on a spool owned by another user: become that user; returns its name.

    Not root, or a root-owned or missing spool: nothing changes (None).
    """
    if os.geteuid() != 0:
        return None
    entry = spool_owner(spool_dir)
    if entry is None:
        return None
    _started_as.append(os.getuid())
    become(entry)
    log.debug("running as %s, the owner of %s", entry.pw_name, spool_dir)
    return entry.pw_name


@contextlib.contextmanager
def acting_as(entry: pwd.struct_passwd) -> Iterator[None]:
    """Root with entry's effective ids for a while, then root again.

    For root's own edits inside a folder the service user owns (`scanmail setup` writing
    etc/scanmail.env): a file made there is entry's from the start, and a link planted
    there leads only where entry could go anyway. The real and saved uid stay 0, so the
    way back is open (to this process only: a signal or ptrace needs the real uid).
    """
    groups, egid = os.getgroups(), os.getegid()
    os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
    os.setegid(entry.pw_gid)
    os.seteuid(entry.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)
