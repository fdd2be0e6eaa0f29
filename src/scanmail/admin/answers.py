"""What the admin answered `scanmail setup`, checked before anything is touched.

A typo in an answer stops the run with one line naming the option, before any user, file
or unit exists. Each answer becomes a setting of etc/scanmail.env; a given answer is set
whether the file is new or not (the admin asked for it), while the defaults computed
here (this host's name, its domain, postmaster@ that domain) go only into a new file: a
second run must never undo what the admin edited since.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scanmail.config import DEFAULT_SPOOL, SETTINGS
from scanmail.errors import ConfigError

DEFAULT_USER = "scanmail"
DEFAULT_LISTEN = "[::]:25"  # IPv4 and IPv6 (the receiver falls back to IPv4 alone)
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
# Debian's adduser accepts these for a system user (SYS_NAME_REGEX); 32 is useradd's limit.
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# Paths go into systemd units, where a space, a quote or % (a specifier) would change them.
_UNIT_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
# Debian's own freshclam service: then sigupdate must not run freshclam a second time.
FRESHCLAM_UNITS = (Path("/lib/systemd/system/clamav-freshclam.service"),
                   Path("/usr/lib/systemd/system/clamav-freshclam.service"))


@dataclass(frozen=True)
class Answers:
    """Everything setup needs to know, checked."""

    user: str
    spool: Path
    unit_dir: Path
    bin_dir: Path
    start: bool
    given: Mapping[str, str]  # settings named on the command line: always set
    defaults: Mapping[str, str] = field(default_factory=dict)  # for a new env file only
    notes: Mapping[str, str] = field(default_factory=dict)  # why a default was chosen


def is_host(text: str) -> bool:
    """A DNS name (RFC 1123 labels) or an IP address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        labels = text.rstrip(".").split(".")
        return len(text) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
    return True


def parse_relay(text: str) -> tuple[str, int]:
    """HOST[:PORT] (an IPv6 address in brackets when a port follows); port 25 by default."""
    value = text.strip()
    host, port = value, "25"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                host = ""
            port = rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
    if not host or not is_host(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--relay-host {text!r}: not HOST[:PORT] (such as mail.example.lan "
                          "or 192.0.2.7:2525): the internal mail server clean mail goes to")
    return host.rstrip("."), int(port)


def check_user(name: str) -> str:
    """A system user name adduser and useradd both take."""
    if not USER_NAME.fullmatch(name):
        raise ConfigError(f"--user {name!r}: not a user name (lower-case letters, digits, _ "
                          "and -, starting with a letter or _, at most 32)")
    return name


def check_path(option: str, text: str) -> Path:
    """An absolute path that can stand in a systemd unit as it is."""
    if not _UNIT_SAFE_PATH.fullmatch(text) or "/../" in f"{text}/":
        raise ConfigError(f"{option} {text!r}: must be an absolute path of letters, digits "
                          "and . _ - + / (it is written into systemd units)")
    return Path(text)


def check_setting(option: str, name: str, text: str) -> str:
    """text as the setting name's own parser takes it, or one line naming the option."""
    setting = next(s for s in SETTINGS if s.name == name)
    try:
        setting.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r} {exc}") from None
    if any(c in text for c in "'\\\n\r"):
        raise ConfigError(f"{option} {text!r}: no quotes, backslashes or line ends")
    return text.strip()


def check_domains(text: str) -> str:
    """LOCAL_DOMAINS: host names separated by spaces or commas (a leading dot: subdomains)."""
    domains = text.replace(",", " ").split()
    for domain in domains:
        if not is_host(domain.removeprefix(".")):
            raise ConfigError(f"--local-domains {text!r}: {domain!r} is not a domain name")
    return " ".join(domains)


def domain_of(host: str) -> str:
    """The domain a host name is in (gw.corp.example: corp.example); '' if it has none."""
    _, _, domain = host.rstrip(".").partition(".")
    return domain if "." in domain and is_host(domain) else ""


def gather(
    *, user: str = DEFAULT_USER, spool: str | None = None, hostname: str | None = None,
    local_domains: str | None = None, relay_host: str | None = None,
    admin_email: str | None = None, listen: str | None = None,
    clamd_socket: str | None = None, clamd_conf: str | None = None,
    sig_db_dir: str | None = None, unit_dir: str | None = None, bin_dir: str,
    start: bool = True,
) -> Answers:
    """The answers checked; None means not given (a default, for a new env file only)."""
    root = check_path("--spool", spool) if spool is not None else DEFAULT_SPOOL
    given = {"SPOOL_DIR": str(root)}  # where the file lives: it must say so
    if hostname is not None:
        if not is_host(hostname):
            raise ConfigError(f"--hostname {hostname!r}: not a host name")
        given["HOSTNAME"] = hostname
    if local_domains is not None:
        given["LOCAL_DOMAINS"] = check_domains(local_domains)
    if relay_host is not None:
        host, port = parse_relay(relay_host)
        given["RELAY_HOST"], given["RELAY_PORT"] = host, str(port)
    if admin_email is not None:
        given["ADMIN_EMAIL"] = check_setting("--admin-email", "ADMIN_EMAIL", admin_email)
    if listen is not None:
        given["LISTEN"] = check_setting("--listen", "LISTEN", listen)
    if clamd_socket is not None:
        given["CLAMD_SOCKET"] = check_setting("--clamd-socket", "CLAMD_SOCKET", clamd_socket)
    if clamd_conf is not None:  # empty: clamd is left alone, and not checked either
        given["CLAMD_CONF"] = str(check_path("--clamd-conf", clamd_conf)) if clamd_conf else ""
    if sig_db_dir is not None:
        given["SIG_DB_DIR"] = str(check_path("--sig-db-dir", sig_db_dir))
    defaults, notes = fresh_defaults(given)
    return Answers(
        user=check_user(user), spool=root,
        unit_dir=check_path("--unit-dir", unit_dir) if unit_dir else DEFAULT_UNIT_DIR,
        bin_dir=check_path("--bin-dir", bin_dir), start=start,
        given=given, defaults=defaults, notes=notes,
    )


def fresh_defaults(given: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The settings a new env file gets when not given, and a note for each guessed one."""
    defaults: dict[str, str] = {"LISTEN": DEFAULT_LISTEN}
    notes: dict[str, str] = {}
    host = given.get("HOSTNAME") or socket.getfqdn()
    if "HOSTNAME" not in given and is_host(host) and "." in host:
        defaults["HOSTNAME"] = host
        notes["HOSTNAME"] = "this host's FQDN (--hostname to change)"
    domains = given.get("LOCAL_DOMAINS", "").split()
    if not domains and domain_of(host):
        domains = [domain_of(host)]
    if "LOCAL_DOMAINS" not in given:
        if domains:
            defaults["LOCAL_DOMAINS"] = domains[0]
            notes["LOCAL_DOMAINS"] = f"the domain of {host} (--local-domains to change)"
        else:
            notes["LOCAL_DOMAINS"] = (f"not set: {host} has no domain, so the receiver refuses "
                                      "mail from outside RELAY_NETWORKS (--local-domains)")
    if "ADMIN_EMAIL" not in given:
        if domains:
            defaults["ADMIN_EMAIL"] = f"postmaster@{domains[0].removeprefix('.')}"
            notes["ADMIN_EMAIL"] = "postmaster of the first local domain (--admin-email)"
        else:
            notes["ADMIN_EMAIL"] = "not set: alerts go to postmaster@localhost (--admin-email)"
    if any(unit.exists() for unit in FRESHCLAM_UNITS):
        defaults["FRESHCLAM_COMMAND"] = ""
        notes["FRESHCLAM_COMMAND"] = ("empty: Debian's clamav-freshclam service updates the "
                                      "signatures; sigupdate reloads clamd and watches their age")
    return defaults, notes
