"""Config: every setting, read once from a .env file and the environment, validated."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from scanmail.errors import ConfigError
from scanmail.hostname import own_name

DEFAULT_SPOOL = Path("/var/spool/smtpd")
ENV_NAME = "scanmail.env"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """SPOOL_DIR/etc/scanmail.env, with SPOOL_DIR taken from the environment if set."""
    env = os.environ if environ is None else environ
    return Path(env.get("SPOOL_DIR") or DEFAULT_SPOOL) / "etc" / ENV_NAME


def _path(value: str) -> Path:
    if not value:
        raise ValueError("must not be empty")
    return Path(value)


def _text(value: str) -> str:
    return value


def _nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _command(value: str) -> tuple[str, ...]:
    argv = tuple(shlex.split(value))
    if not argv:
        raise ValueError("must name a command")
    return argv


def _optional_command(value: str) -> tuple[str, ...]:
    return tuple(shlex.split(value))


def _yes_no(value: str) -> bool:
    low = value.strip().lower()
    if low in ("yes", "true", "1", "on"):
        return True
    if low in ("no", "false", "0", "off"):
        return False
    raise ValueError("must be yes or no")


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value.strip())
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        number = float(value.strip())
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _size(value: str) -> int:
    """A byte count, with an optional K, M or G suffix (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)B?\s*", value, re.IGNORECASE)
    if not match:
        raise ValueError("must be a size such as 52428800, 50M or 2G")
    scale = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2).upper()]
    return int(match.group(1)) * scale


def _codes(value: str) -> frozenset[int]:
    codes = frozenset(int(item) for item in value.replace(",", " ").split())
    if not codes:
        raise ValueError("must list at least one exit code")
    return codes


def _regex(value: str) -> re.Pattern[str]:
    try:
        return re.compile(value, re.MULTILINE)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression ({exc})") from None


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        low = value.strip().lower()
        if low not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return low

    return parse


def _clamd_socket(value: str) -> str:
    value = value.strip()
    if value.startswith("tcp://"):
        host, _, port = value[len("tcp://") :].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be a socket path or tcp://host:port")
    elif not value.startswith("/"):
        raise ValueError("must be an absolute socket path or tcp://host:port")
    return value


def _address(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", value):
        raise ValueError("must be an e-mail address such as postmaster@example.com")
    return value


def _domains(value: str) -> frozenset[str]:
    return frozenset(item.strip().lower().rstrip(".") for item in value.replace(",", " ").split())


def _networks(value: str) -> tuple[Network, ...]:
    return tuple(
        ipaddress.ip_network(item, strict=False) for item in value.replace(",", " ").split()
    )


def _listen(value: str) -> tuple[str, int]:
    """ADDRESS:PORT, an IPv6 address in brackets ([::]:25, [::1]:10024), a port 0-65535."""
    text = value.strip()
    usage = "must be ADDRESS:PORT, such as [::]:25 (IPv4 and IPv6), 0.0.0.0:25 or [::1]:10024"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            raise ValueError(f"{usage}: [{host}] is not an IPv6 address") from None
        if not sep:
            raise ValueError(usage)
    else:
        host, _, port = text.rpartition(":")
        if ":" in host:  # ::1:25 is address ::1 port 25, or address ::1:25 with no port
            raise ValueError(f"{usage}: an IPv6 address goes in brackets")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(usage)
    return host, int(port)


def _header(value: str) -> str:
    value = value.strip()
    if value and not re.fullmatch(r"[!-9;-~]+:[ \t]*[ -~]*", value):
        raise ValueError("must be one header line such as 'X-Virus-Scanned: ClamAV', or empty")
    return value


def _urls(value: str) -> tuple[str, ...]:
    urls = tuple(value.split())
    for url in urls:
        if not re.match(r"(file|https?)://", url):
            raise ValueError(f"{url!r} is not a file://, http:// or https:// URL")
    return urls


@dataclass(frozen=True)
class Setting:
    """One documented setting: its .env name, default and parser."""

    name: str
    default: str
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("SPOOL_DIR", str(DEFAULT_SPOOL), _path, "the spool root"),
    Setting("SCANNER", "clamd", _choice("clamd", "command"), "clamd or command"),
    Setting("CLAMD_SOCKET", "/var/run/clamav/clamd.ctl", _clamd_socket,
            "clamd's Unix socket path, or tcp://host:port"),
    Setting("CLAMD_TIMEOUT", "120", _float_range(1, 3600),
            "seconds to wait for clamd before the scan counts as failed"),
    Setting("CLAMD_CONF", "/etc/clamav/clamd.conf", _text,
            "the clamd.conf clamd runs with, read for its size limits (empty: not checked)"),
    Setting("SCAN_WORKERS", "4", _int_range(1, 64),
            "messages decoded and scanned at once; about twice clamd's cores keeps clamd busy"),
    Setting("SCANNER_COMMAND", "clamscan --no-summary --infected --alert-exceeds-max=yes {}",
            _command, "the command backend's command line; {} stands for the path to scan"),
    Setting("SCANNER_CLEAN_CODES", "0", _codes, "command exit codes meaning clean"),
    Setting("SCANNER_INFECTED_CODES", "1", _codes, "command exit codes meaning infected"),
    Setting("SCANNER_VIRUS_REGEX", r"^.*?: (.+?) FOUND$", _regex,
            "regex whose group 1 is a virus name in the command's output"),
    Setting("SCANNER_TIMEOUT", "600", _float_range(1, 86400),
            "seconds before a command scanner is killed and the scan counts as failed"),
    Setting("SCAN_POLICY", "all", _choice("all", "suspect"),
            "all: scan every message; suspect: only those matching matches.doc"),
    Setting("ENCRYPTED_ARCHIVES", "quarantine", _choice("quarantine", "deliver"),
            "mail with an archive member no password opens: quarantine or deliver"),
    Setting("RAW_SCAN", "lean", _choice("lean", "whole"),
            "lean: raw message less the attachments also scanned decoded; whole: all of it"),
    Setting("DECODE_MAX_BYTES", "200M", _size,
            "decoded bytes per message beyond which it is quarantined as unchecked"),
    Setting("DECODE_MAX_PARTS", "1000", _int_range(1, 1_000_000),
            "MIME parts and archive members per message beyond which it is unchecked"),
    Setting("DECODE_MAX_DEPTH", "20", _int_range(1, 1000),
            "nesting depth (multiparts, attached messages, archives) beyond which unchecked"),
    Setting("SCANNED_HEADER", "X-Virus-Scanned: ClamAV using scanmail", _header,
            "header line added to clean mail; empty adds none"),
    Setting("ADMIN_EMAIL", "postmaster@localhost", _address, "where alerts and reports go"),
    Setting("ALERT_FROM", "", _text,
            "sender of alerts and notices (default MAILER-DAEMON@<this host's name>)"),
    Setting("NOTIFY_SENDER", "no", _yes_no, "yes to send the sender a notice about a virus"),
    Setting("HOSTNAME", "", _text,
            "this gateway's full name: its greeting, HELO, Received: and alerts (default: "
            "the FQDN, never localhost while the host has another name)"),
    Setting("RELAY_HOST", "localhost", _nonempty, "the internal mail server"),
    Setting("RELAY_PORT", "25", _int_range(1, 65535), "its SMTP port"),
    Setting("LISTEN", "[::]:25", _listen,
            "where scanmail-smtpd listens: ADDRESS:PORT, IPv6 in brackets; [::] takes IPv4 and "
            "IPv6 (0.0.0.0 on a host without IPv6)"),
    Setting("LOCAL_DOMAINS", "", _domains, "recipient domains the receiver accepts mail for"),
    Setting("RECIPIENT_VERIFY", "auto", _choice("auto", "probe", "file", "no"),
            "check recipients at RCPT: probe the relay, RECIPIENTS_FILE, or no; auto: the "
            "file if set, else probe when LOCAL_DOMAINS is set"),
    Setting("RECIPIENTS_FILE", "", _text,
            "valid recipients, one address or @domain a line, reread when it changes"),
    Setting("RELAY_NETWORKS", "127.0.0.1/32 ::1/128", _networks,
            "client networks allowed to send to any recipient"),
    Setting("MAX_MESSAGE_SIZE", "50M", _size, "largest message the receiver accepts"),
    Setting("MAX_RECIPIENTS", "100", _int_range(1, 100_000), "recipients per message"),
    Setting("MAX_CONNECTIONS", "50", _int_range(1, 100_000), "SMTP connections at once"),
    Setting("MAX_CONNECTIONS_PER_CLIENT", "10", _int_range(1, 100_000),
            "SMTP connections at once from one client address"),
    Setting("MAX_HOPS", "30", _int_range(1, 1000),
            "Received: headers beyond which a message is refused as a mail loop"),
    Setting("SMTP_TIMEOUT", "300", _float_range(1, 3600),
            "idle seconds before a client is dropped"),
    Setting("TLS_CERT", "", _text, "PEM certificate for STARTTLS (empty: no STARTTLS)"),
    Setting("TLS_KEY", "", _text, "PEM private key for STARTTLS, unencrypted, readable by "
            "the service user (in Debian's /etc/ssl/private: adduser scanmail ssl-cert)"),
    Setting("FWD_INTERVAL", "30", _float_range(0.1, 86400),
            "seconds between the forwarder's sweeps of outgoing (files are taken as they land)"),
    Setting("FWD_CONCURRENCY", "4", _int_range(1, 256), "deliveries at once"),
    Setting("FWD_MAX_AGE_DAYS", "5", _float_range(0, 365),
            "days a temporarily failing message is retried before it bounces"),
    Setting("FWD_DEADLINE", "900", _float_range(1, 86400),
            "seconds one delivery transaction may take in all, however the relay trickles"),
    Setting("FWD_SENDMAIL", "", _optional_command,
            "hand mail to a local MTA instead of SMTP, e.g. /usr/sbin/sendmail"),
    Setting("SIG_DB_DIR", "/var/lib/clamav", _path, "ClamAV's database directory"),
    Setting("SIG_SOURCES", "", _urls, "extra signature files to fetch, URLs separated by spaces"),
    Setting("FRESHCLAM_COMMAND", "freshclam", _optional_command,
            "how sigupdate runs freshclam (empty: do not run it)"),
    Setting("SIG_MAX_AGE_DAYS", "3", _float_range(0, 3650),
            "signatures older than this raise an alarm"),
    Setting("ALERT_DIGEST_MINUTES", "5", _float_range(0, 1440),
            "alerts for the same reason within this many minutes go out as one digest "
            "(the first at once); 0 sends every alert"),
    Setting("QUARANTINE_RETENTION_DAYS", "30", _int_range(1, 36500),
            "days quarantined mail is kept by 'scanmail quarantine purge'"),
)

SETTING_NAMES = frozenset(setting.name for setting in SETTINGS)


@dataclass(frozen=True)
class Config:
    """All settings, validated; attribute names are the setting names in lower case."""

    spool_dir: Path
    scanner: str
    clamd_socket: str
    clamd_timeout: float
    clamd_conf: str
    scan_workers: int
    scanner_command: tuple[str, ...]
    scanner_clean_codes: frozenset[int]
    scanner_infected_codes: frozenset[int]
    scanner_virus_regex: re.Pattern[str]
    scanner_timeout: float
    scan_policy: str
    encrypted_archives: str
    raw_scan: str
    decode_max_bytes: int
    decode_max_parts: int
    decode_max_depth: int
    scanned_header: str
    admin_email: str
    alert_from: str
    notify_sender: bool
    hostname: str
    relay_host: str
    relay_port: int
    listen: tuple[str, int]
    local_domains: frozenset[str]
    recipient_verify: str
    recipients_file: str
    relay_networks: tuple[Network, ...]
    max_message_size: int
    max_recipients: int
    max_connections: int
    max_connections_per_client: int
    max_hops: int
    smtp_timeout: float
    tls_cert: str
    tls_key: str
    fwd_interval: float
    fwd_concurrency: int
    fwd_max_age_days: float
    fwd_deadline: float
    fwd_sendmail: tuple[str, ...]
    sig_db_dir: Path
    sig_sources: tuple[str, ...]
    freshclam_command: tuple[str, ...]
    sig_max_age_days: float
    quarantine_retention_days: int
    alert_digest_minutes: float

    @classmethod
    def from_mapping(cls, values: Mapping[str, str | None], source: str = "config") -> Config:
        """Validate every key at once; raise one ConfigError naming every bad one."""
        problems = [f"unknown setting {key}" for key in values if key not in SETTING_NAMES]
        parsed: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = values.get(setting.name)
            text = setting.default if raw is None else raw
            try:
                parsed[setting.name.lower()] = setting.parse(text)
            except ValueError as exc:
                problems.append(f"{setting.name}={text!r} {exc}")
        if problems:
            raise ConfigError(f"{source}: " + "; ".join(problems))
        config = cls(**parsed)
        host = config.hostname or own_name()
        alert_from = config.alert_from or f"MAILER-DAEMON@{host}"
        return replace(config, hostname=host, alert_from=alert_from)

    def with_overrides(self, **overrides: Any) -> Config:
        """A copy with command-line flags applied (flags win over file and environment)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def etc_dir(self) -> Path:
        return self.spool_dir / "etc"

    @property
    def var_dir(self) -> Path:
        return self.spool_dir / "var"


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the .env file (if any), let real environment variables override it, validate."""
    env = os.environ if environ is None else environ
    explicit = path is not None
    path = path if path is not None else default_config_path(env)
    values: dict[str, str | None] = {}
    if path.exists():
        try:
            # dotenv_values, not load_dotenv: no os.environ mutation, no parent-dir search.
            values.update(dotenv_values(path, interpolate=False))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
    elif explicit:
        raise ConfigError(f"{path}: config file not found")
    for key in SETTING_NAMES:
        if key in env:
            values[key] = env[key]
    return Config.from_mapping(values, source=str(path))
