"""`scanmail setup`: the README's install in one command, each step idempotent and said.

The manual install is a dozen commands, one of them an editor session; this does the same
from answers: the service user, the spool (`create_spool`, as `scanmail init`), the env
file, clamd's limits, the ACL on ClamAV's folder, the systemd units, and the services
started. Each step looks first and changes only what differs, so setup is also the
upgrade, and a second run changes nothing and says so. A step that cannot be done stops
the run with one line (SetupError, exit 73; a bad answer or setting: exit 78); the steps
before it are done and stay done, and the next run picks up from there.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from scanmail.admin import account, clamdconf, envfile, systemd, units
from scanmail.admin.answers import Answers
from scanmail.admin.init import create_spool
from scanmail.admin.step import Step, done, note
from scanmail.config import DEFAULT_SPOOL, ENV_NAME, SETTINGS
from scanmail.errors import SetupError
from scanmail.privileges import spool_owner
from scanmail.spool import FOLDERS

DEFAULT_CLAMD_CONF = next(s.default for s in SETTINGS if s.name == "CLAMD_CONF")

Snapshot = tuple[tuple[str, int, int, int, str], ...]


def run_setup(answers: Answers) -> Iterator[Step]:
    """Every step in order, each as it is done; the last lines say what changed and what next."""
    if os.geteuid() != 0:
        raise SetupError("scanmail setup must be run as root: it creates the service user, "
                         "the spool and the systemd units")
    check_bin_dir(answers.bin_dir)
    changes = 0
    for step in steps(answers):
        changes += step.changed
        yield step
    yield from what_next(answers, changes)


def steps(answers: Answers) -> Iterator[Step]:
    """The steps themselves, in the order the README's manual install has them."""
    entry, made = account.ensure_user(answers.user, answers.spool)
    yield made
    yield settle_spool(answers.spool, entry)
    written, config = envfile.settle(answers.spool / "etc" / ENV_NAME, answers.given,
                                     answers.defaults, answers.notes, entry)
    yield from written
    clamd_conf = Path(config.clamd_conf) if config.clamd_conf else None
    clamd = note("CLAMD_CONF is empty: clamd's limits left alone")
    if clamd_conf is not None:
        required = config.clamd_conf != DEFAULT_CLAMD_CONF  # named by the admin: must exist
        clamd = clamdconf.settle(clamd_conf, config.max_message_size, required)
    yield clamd
    yield account.grant_acl(config.sig_db_dir, entry.pw_name)
    rendered = {name: units.render(name, text, bin_dir=answers.bin_dir, user=entry.pw_name,
                                   group=account.group_name(entry), spool=answers.spool,
                                   sig_db_dir=config.sig_db_dir)
                for name, text in units.shipped().items()}
    installed = units.install(answers.unit_dir, rendered)
    yield installed
    hidden = units.hidden_from_services(answers.spool)
    if hidden:
        yield note(hidden)
    if answers.start and systemd.is_running():
        yield from systemd.start(
            reload=installed.changed, refresh=written[0].changed or installed.changed,
            clamd_changed=clamd.changed, clamd_conf=clamd_conf, listen=config.listen)
    else:
        yield from systemd.by_hand(rendered, clamd.changed, clamd_conf, systemd.is_running())


def check_bin_dir(bin_dir: Path) -> None:
    """The units start the commands from bin_dir: all five must be there."""
    missing = [name for name in units.COMMANDS if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise SetupError(f"--bin-dir {bin_dir}: no {', '.join(missing)} there (the folder "
                         "of the installed commands, such as /opt/scanmail/bin)")


def settle_spool(root: Path, entry: pwd.struct_passwd) -> Step:
    """The spool folders and default files, as `scanmail init --user` makes them.

    A folder that exists, is not empty and is no spool is refused (create_spool would
    give it to the service user, mode 0700: think of --spool /var); so is a spool that
    another user owns (its files would stay that user's).
    """
    if root.is_dir() and not (root / "incoming").is_dir() and any(root.iterdir()):
        raise SetupError(f"--spool {root}: not empty and not a spool (no incoming/): give "
                         "a new or empty folder")
    owner = spool_owner(root)
    if owner is not None and owner.pw_uid != entry.pw_uid:
        raise SetupError(f"{root} belongs to {owner.pw_name}, not {entry.pw_name}: give "
                         f"--user {owner.pw_name}, or chown -R {entry.pw_name}: {root}")
    before = snapshot(root)
    create_spool(root, entry.pw_name)
    after = snapshot(root)
    if before == after:
        return note(f"spool {root}: already there (folders 0700, owned by {entry.pw_name})")
    if not before:
        return done(f"created the spool {root} (folders 0700, owned by {entry.pw_name})")
    return done(f"spool {root}: folders, owners or default files brought up to date")


def snapshot(root: Path) -> Snapshot:
    """Owner, mode and content of the spool's folders and etc files: what init may change."""
    paths = [root, *(root / name for name in FOLDERS)]
    etc = root / "etc"
    if etc.is_dir() and not etc.is_symlink():
        paths += sorted(etc.iterdir())
    found = []
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        digest = digest_of(path) if stat.S_ISREG(info.st_mode) else ""
        found.append((str(path), info.st_uid, info.st_gid, info.st_mode, digest))
    return tuple(found)


def digest_of(path: Path) -> str:
    """A plain file's content hash; never through a link, never waiting on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "unreadable"
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a plain file"
        return hashlib.file_digest(file, "sha256").hexdigest()


def what_next(answers: Answers, changes: int) -> Iterator[Step]:
    """The closing lines: whether anything changed, and what the admin does now."""
    if changes:
        yield note(f"setup done: {changes} step{'s' if changes != 1 else ''} changed "
                   "something; run it again at any time (it changes only what differs)")
    else:
        yield note("nothing changed: everything was already set up as asked")
    prefix = "" if answers.spool == DEFAULT_SPOOL else f"SPOOL_DIR={answers.spool} "
    yield note(f"next: {prefix}scanmail status    (folders, clamd, signatures, forwarder)")
    yield note("      journalctl -t scanmail -t scanmail-smtpd -t scanmail-fwd -f    (the log)")
    yield note(f"      the settings: {answers.spool / 'etc' / ENV_NAME} (every one: "
               "scanmail.env.example beside it); then run setup again or restart the services")
