"""The spool hierarchy and default etc/ files, created by `scanmail init`."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
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
        for name in (".", *FOLDERS):
            folder = root / name
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
        for name in DEFAULT_FILES:
            target = root / "etc" / name
            refresh = name.endswith(".example")  # ours, not the admin's: keep it current
            if refresh or not target.exists():
                source = resources.files("scanmail") / "defaults" / name
                with source.open("rb") as src, open(target, "wb" if refresh else "xb") as dst:
                    shutil.copyfileobj(src, dst)
                installed.append(target)
        if user:  # the folders and etc files; messages already there keep their owner
            for path in (root, *(root / name for name in FOLDERS), *root.joinpath("etc").iterdir()):
                os.chown(path, uid, gid, follow_symlinks=False)
    except OSError as exc:
        raise SpoolError(f"{root}: cannot create the spool: {exc.strerror}") from exc
    return installed
