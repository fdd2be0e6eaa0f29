"""The installed services started: by systemctl when systemd runs, else the exact commands.

Whether systemd runs is sd_booted()'s test, /run/systemd/system: a container or a chroot
has systemctl installed but no systemd to talk to, and there setup prints what to run.
A service already running is restarted only when its settings or unit changed, so a
second setup leaves it alone.
"""

from __future__ import annotations

import errno
import shlex
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from scanmail.admin.step import Step, done, note
from scanmail.admin.tool import run_tool, succeeds
from scanmail.admin.units import command_line
from scanmail.config import DEFAULT_SPOOL
from scanmail.errors import SetupError

RUNNING = Path("/run/systemd/system")
SERVICES = ("scanmail-smtpd.service", "scanmail.service", "scanmail-fwd.service")
TIMERS = ("sigupdate.timer", "daysumm.timer")
CLAMD_UNIT = "clamav-daemon.service"
DEBIAN_CLAMD_CONF = Path("/etc/clamav/clamd.conf")  # the file clamav-daemon.service reads


def is_running() -> bool:
    """Whether systemd is PID 1 here."""
    return RUNNING.is_dir()


def names(units: tuple[str, ...] | list[str]) -> str:
    return " ".join(unit.removesuffix(".service") for unit in units)


def enable_command() -> str:
    return f"systemctl daemon-reload && systemctl enable --now {names([*SERVICES, *TIMERS])}"


def check_port(listen: tuple[str, int]) -> None:
    """SetupError if the receiver could not bind LISTEN (another MTA holds port 25?)."""
    host, port = listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = ("in use (exim4 or postfix? systemctl disable --now exim4 postfix)"
                   if exc.errno == errno.EADDRINUSE else exc.strerror)
            raise SetupError(f"LISTEN {host}:{port}: {why}; scanmail-smtpd not started") from None


def restart_clamd_hint(clamd_conf: Path | None) -> str:
    """How to make clamd read new limits, for the admin to do."""
    return "restart clamd to use the new limits: " + (
        f"systemctl restart {names([CLAMD_UNIT])}" if clamd_conf == DEBIAN_CLAMD_CONF
        else f"the clamd that reads {clamd_conf}")


def start(*, reload: bool, refresh: bool, clamd_changed: bool, clamd_conf: Path | None,
          listen: tuple[str, int]) -> Iterator[Step]:
    """systemctl: units reloaded, Debian's clamd restarted for new limits, services running."""
    if reload:
        run_tool(["systemctl", "daemon-reload"])
        yield done("systemd: reloaded the unit files")
    if clamd_changed and clamd_conf == DEBIAN_CLAMD_CONF:
        run_tool(["systemctl", "restart", CLAMD_UNIT])
        yield done(f"systemd: restarted {names([CLAMD_UNIT])}: it now uses the new limits")
    elif clamd_changed:
        yield note(restart_clamd_hint(clamd_conf))
    wanted = [*SERVICES, *TIMERS]
    idle = [unit for unit in wanted
            if not (succeeds(["systemctl", "is-enabled", "--quiet", unit])
                    and succeeds(["systemctl", "is-active", "--quiet", unit]))]
    running = [unit for unit in SERVICES if unit not in idle]
    if refresh and running:
        run_tool(["systemctl", "restart", *running])
        yield done(f"systemd: restarted {names(running)} (new settings or units)")
    if idle:
        if SERVICES[0] in idle:
            check_port(listen)
        run_tool(["systemctl", "enable", "--now", *idle])
        yield done(f"systemd: enabled and started {names(idle)}")
    elif not (refresh and running):
        yield note(f"systemd: {names(wanted)} already enabled and running")


def by_hand(units: Mapping[str, str], clamd_changed: bool, clamd_conf: Path | None,
            systemd_running: bool) -> Iterator[Step]:
    """What to run, since setup starts nothing (--no-start, or no systemd)."""
    if not systemd_running:
        yield note(f"systemd is not running (no {RUNNING}): nothing started. By hand, as "
                   "root (each command becomes the spool's owner; the receiver binds first):")
        for unit in SERVICES:
            argv, environment = command_line(units[unit])
            spool = environment.get("SPOOL_DIR", str(DEFAULT_SPOOL))
            prefix = "" if spool == str(DEFAULT_SPOOL) else f"SPOOL_DIR={shlex.quote(spool)} "
            yield note(f"  {prefix}{shlex.join(argv)} &")
        yield note("  sigupdate and daysumm then from the service user's crontab "
                   "(crontab.example); once systemd runs: " + enable_command())
    else:
        yield note(f"not started (--no-start); to start: {enable_command()}")
    if clamd_changed:
        yield note(restart_clamd_hint(clamd_conf))
