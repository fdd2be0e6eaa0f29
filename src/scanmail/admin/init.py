"""The spool hierarchy and default etc/ files, created by `scanmail init`."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import stat
from importlib import resources
from pathlib import Path

from scanmail.config import SETTINGS
from scanmail.errors import ConfigError, SpoolError
from scanmail.spool import FOLDERS

log = logging.getLogger(__name__)

DEFAULT_FILES = ("matches.bad", "matches.doc", "scanmail.env.example")


def render_env_example() -> str:
    """etc/scanmail.env.example: every setting with its default and meaning."""
    lines = [
        "# scanmail settings. Copy to scanmail.env and edit; every line here shows the default.",
        "# Real environment variables override this file; command-line flags override both.",
        "",
    ]
    for setting in SETTINGS:
        lines.append(f"# {setting.help}")
        lines.append(f"#{setting.name}={_quote(setting.default)}")
        lines.append("")
    return "\n".join(lines)


def _quote(value: str) -> str:
    return f"'{value}'" if any(c in value for c in " #{}\"'\\") or not value else value


def create_spool(root: Path, user: str | None = None) -> list[Path]:
    """Create the spool folders (mode 0700, owned by user if given) and default etc files.

    Never overwrites a file an admin may have edited; returns the files it installed.
    Run by root on a spool the service user can write, it never follows a link: every
    folder and file is opened relative to its folder's descriptor with O_NOFOLLOW, and
    modes and owners are set on those descriptors (a planted link is an error, not a way
    to chmod or chown /etc/shadow).
    """
    uid = gid = -1
    if user:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ConfigError(f"--user {user}: no such user") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    installed: list[Path] = []
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)  # the admin's path: may be a link
        try:
            _settle(root_fd, uid, gid, 0o700)
            for name in FOLDERS:
                fd = _open_folder(root, root_fd, name)
                try:
                    _settle(fd, uid, gid, 0o700)
                    if name == "etc":
                        installed += _install_defaults(root / "etc", fd, uid, gid)
                finally:
                    os.close(fd)
        finally:
            os.close(root_fd)
    except OSError as exc:
        where = exc.filename or root
        raise SpoolError(f"{where}: cannot create the spool: {exc.strerror}") from exc
    return installed


def _open_folder(root: Path, root_fd: int, name: str) -> int:
    """root/name as a descriptor, created if missing; a link there is refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=root_fd)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SpoolError(
                f"{root / name}: not a folder (a symbolic link?); move it aside and run "
                "scanmail init again"
            ) from None
        raise


def _settle(fd: int, uid: int, gid: int, mode: int | None) -> None:
    """Mode and owner set on an open descriptor (never through a name)."""
    if mode is not None:
        os.fchmod(fd, mode)
    if uid != -1:
        os.fchown(fd, uid, gid)


def _install_defaults(etc: Path, etc_fd: int, uid: int, gid: int) -> list[Path]:
    """The default etc files, never written through a link; owners given on descriptors."""
    installed: list[Path] = []
    for name in DEFAULT_FILES:
        refresh = name.endswith(".example")  # ours, not the admin's: keep it current
        if not refresh and _exists(etc_fd, name):
            continue
        data = (resources.files("scanmail") / "defaults" / name).read_bytes()
        partial = f".{name}.partial"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial, dir_fd=etc_fd)  # unlink removes a link, never its target
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                     dir_fd=etc_fd)
        try:
            os.write(fd, data)
            _settle(fd, uid, gid, None)
        finally:
            os.close(fd)
        if refresh:  # rename replaces the name: whatever was there (a link too) is untouched
            os.replace(partial, name, src_dir_fd=etc_fd, dst_dir_fd=etc_fd)
        else:
            try:
                os.link(partial, name, src_dir_fd=etc_fd, dst_dir_fd=etc_fd,
                        follow_symlinks=False)
            finally:
                os.unlink(partial, dir_fd=etc_fd)
        installed.append(etc / name)
    if uid != -1:  # the admin's own files (scanmail.env copied by root): only real files
        for name in os.listdir(etc_fd):
            _own_file(etc_fd, name, uid, gid)
    return installed


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _own_file(dir_fd: int, name: str, uid: int, gid: int) -> None:
    """chown a regular file in etc/ that has one link; links and hard links stay as they are."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EACCES):
            log.warning("etc/%s: not a plain file; its owner is left as it is", name)
            return
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            os.fchown(fd, uid, gid)
        else:
            log.warning("etc/%s: not a plain file; its owner is left as it is", name)
    finally:
        os.close(fd)
