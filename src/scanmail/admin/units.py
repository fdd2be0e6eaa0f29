"""The systemd units, from the package's etc/systemd, made to fit this install.

The shipped units name /usr/local/bin, the user scanmail and /var/spool/smtpd (the
README's manual install); setup writes them with the answers instead: the folder of the
installed commands, the service user and its group, the spool (ReadWritePaths, and
SPOOL_DIR, which tells every command where its scanmail.env is) and SIG_DB_DIR. A file
already as it would be written is not touched; one that differs is kept beside it as
NAME.scanmail-bak before it is replaced, so no edit of the admin's is lost (local changes
belong in a drop-in: systemctl edit NAME).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from scanmail.admin.step import Step, done, note
from scanmail.config import DEFAULT_SPOOL, SETTINGS
from scanmail.durable import write_file

COMMANDS = ("scanmail", "scanmail-smtpd", "scanmail-fwd", "sigupdate", "daysumm")
SHIPPED_BIN = "/usr/local/bin/"
SHIPPED_USER = "scanmail"
SHIPPED_SIG_DB_DIR = next(s.default for s in SETTINGS if s.name == "SIG_DB_DIR")
BACKUP_SUFFIX = ".scanmail-bak"
HEADER = ("# Written by `scanmail setup` from scanmail's etc/systemd/{name}, and again when it\n"
          "# differs: put local changes in a drop-in (systemctl edit {name}).\n")
# What ProtectHome=yes and PrivateTmp=yes (every shipped service has both) hide.
HIDDEN = ((Path("/tmp"), "PrivateTmp=yes"), (Path("/var/tmp"), "PrivateTmp=yes"),
          (Path("/home"), "ProtectHome=yes"), (Path("/root"), "ProtectHome=yes"),
          (Path("/run/user"), "ProtectHome=yes"))
_ALTERNATIVES = "|".join(map(re.escape, COMMANDS))
_PROGRAM = re.compile(re.escape(SHIPPED_BIN) + rf"(?=(?:{_ALTERNATIVES})\b)")


def shipped() -> dict[str, str]:
    """The package's unit files by name (etc/systemd in the repository)."""
    folder = resources.files("scanmail") / "defaults" / "systemd"
    return {item.name: item.read_text(encoding="utf-8") for item in sorted(
        folder.iterdir(), key=lambda item: item.name)
        if item.name.endswith((".service", ".timer"))}


def render(name: str, text: str, *, bin_dir: Path, user: str, group: str, spool: Path,
           sig_db_dir: Path) -> str:
    """A shipped unit with this install's paths, user and spool in it."""
    text = _PROGRAM.sub(f"{bin_dir}/", text)
    text = re.sub(rf"^User={SHIPPED_USER}$", f"User={user}", text, flags=re.MULTILINE)
    text = re.sub(rf"^Group={SHIPPED_USER}$", f"Group={group}", text, flags=re.MULTILINE)
    text = text.replace(f"u:{SHIPPED_USER}:", f"u:{user}:")
    text = text.replace(str(DEFAULT_SPOOL), str(spool))
    text = text.replace(SHIPPED_SIG_DB_DIR, str(sig_db_dir))
    if name.endswith(".service"):
        text = re.sub(r"^\[Service\]\n", f"[Service]\nEnvironment=SPOOL_DIR={spool}\n", text,
                      count=1, flags=re.MULTILINE)
    return HEADER.format(name=name) + text


def hidden_from_services(spool: Path) -> str | None:
    """Why the units' sandbox would hide spool from the services, or None if it does not."""
    for folder, setting in HIDDEN:
        if spool == folder or folder in spool.parents:
            return (f"warning: {spool} is under {folder}, which the units' {setting} hides "
                    "from the services: under systemd, give --spool a folder elsewhere")
    return None


def install(unit_dir: Path, units: Mapping[str, str]) -> Step:
    """Write each unit that differs into unit_dir; the Step names what was written."""
    unit_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    kept: list[str] = []
    for name, text in units.items():
        path = unit_dir / name
        data = text.encode("utf-8")
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            old = None
        if old == data:
            continue
        if old is not None:
            write_file(path.with_name(name + BACKUP_SUFFIX), old, 0o644)
            kept.append(name)
        write_file(path, data, 0o644)
        written.append(name)
    if not written:
        return note(f"{unit_dir}: the {len(units)} units are already as they should be")
    previous = f" (the previous {', '.join(kept)} kept as NAME{BACKUP_SUFFIX})" if kept else ""
    return done(f"{unit_dir}: wrote {', '.join(written)}{previous}")


def service_section(text: str) -> dict[str, list[str]]:
    """A unit's [Service] settings, each key with its values in order."""
    section = ""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def command_line(text: str) -> tuple[list[str], dict[str, str]]:
    """A service unit's ExecStart as an argument list, and the Environment it sets."""
    service = service_section(text)
    environment = dict(item.split("=", 1) for value in service.get("Environment", [])
                       for item in shlex.split(value) if "=" in item)
    return shlex.split(service["ExecStart"][-1]), environment
