"""The service user (`scanmail setup`): a system user and group, and its way into ClamAV's folder.

A dedicated system user, not the seed's shared uucp (README, "Service user"): no login
shell, no home of its own (the spool stands in), a group of its own name. sigupdate runs
as that user and writes its reload canary and the SIG_SOURCES files into SIG_DB_DIR,
which Debian gives to clamav: an ACL entry lets it in without changing the folder's owner.
"""

from __future__ import annotations

import grp
import pwd
import shutil
from pathlib import Path

from scanmail.admin.step import Step, done, note
from scanmail.admin.tool import run_tool
from scanmail.errors import SetupError

NOLOGIN = "/usr/sbin/nologin"


def group_name(entry: pwd.struct_passwd) -> str:
    """The name of a user's primary group (Group= in the units); its number if it has none."""
    try:
        return grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        return str(entry.pw_gid)


def describe(entry: pwd.struct_passwd) -> str:
    """uid, group and home of a user, for the report."""
    return f"uid {entry.pw_uid}, group {group_name(entry)}, home {entry.pw_dir}"


def ensure_user(name: str, home: Path) -> tuple[pwd.struct_passwd, Step]:
    """The system user name, created (with its group) if missing; never root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        pass
    else:
        if entry.pw_uid == 0:
            raise SetupError(f"--user {name}: that is root; the service must not run as root")
        return entry, note(f"user {name}: already there ({describe(entry)})")
    if shutil.which("adduser"):
        run_tool(["adduser", "--system", "--group", "--home", str(home), "--no-create-home",
                  "--shell", NOLOGIN, "--quiet", name])
    else:  # a minimal image without Debian's adduser: the shadow tools are always there
        run_tool(["useradd", "--system", "--user-group", "--home-dir", str(home),
                  "--no-create-home", "--shell", NOLOGIN, name], missing="apt-get install passwd")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SetupError(f"user {name} was created but cannot be found (nsswitch?)") from None
    return entry, done(f"created the system user {name} ({describe(entry)})")


def has_acl(folder: Path, name: str) -> bool:
    """Whether folder's access ACL already gives user name rwx."""
    listing = run_tool(["getfacl", "--omit-header", "--absolute-names", str(folder)],
                       missing="apt-get install acl")
    return f"user:{name}:rwx" in listing.split()


def grant_acl(folder: Path, name: str) -> Step:
    """User name may write folder (sigupdate in SIG_DB_DIR), if the folder exists."""
    if not folder.is_dir():
        return note(f"{folder}: not there (SIG_DB_DIR); no ACL set for {name}")
    if has_acl(folder, name):
        return note(f"{folder}: {name} may already write there (ACL)")
    run_tool(["setfacl", "-m", f"u:{name}:rwx", str(folder)], missing="apt-get install acl")
    return done(f"{folder}: {name} may now write there (ACL u:{name}:rwx: sigupdate's "
                "reload canary and SIG_SOURCES files)")
