"""A private, throw-away Postfix instance for scanmail's integration tests.

Debian 12 (Postfix 3.7), run as root.  The instance has its own
config_directory, queue_directory and data_directory under one temporary
directory, listens only on 127.0.0.1 on the ports it is given, relays all
mail to a sink on 127.0.0.1, never looks anything up in DNS, and logs to a
plain file through postlogd (``maillog_file``), so no syslog is needed.
The system instance (/etc/postfix, /var/spool/postfix, /var/lib/postfix)
is neither read for settings, started, stopped nor written to.

Two deployments:

* after-queue content filter (FILTER_README "advanced" example):
  ``PostfixConfig(..., content_filter=AfterQueueFilter(filter_port, reentry_port))``
* Postfix behind a gateway, rejecting unknown users at RCPT with 550 5.1.1:
  ``PostfixConfig(..., relay_domains=("example.test",),
  relay_recipients=("alice@example.test",))``

Typical use from pytest::

    with PostfixInstance(PostfixConfig(smtpd_port=p_in, sink_port=p_sink)) as pf:
        smtplib.SMTP("127.0.0.1", p_in).sendmail(...)
        pf.wait_for_log(r"status=sent", timeout=10)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
POSTCONF = "/usr/sbin/postconf"
MAIL_OWNER = "postfix"
SETGID_GROUP = "postdrop"


class PostfixError(RuntimeError):
    """Postfix could not be configured, started, stopped or queried."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr together, read through a pty (see _run)


@dataclass(frozen=True)
class AfterQueueFilter:
    """Ports of an after-queue content filter.

    Postfix hands every message received on ``smtpd_port`` to the filter at
    127.0.0.1:``filter_port`` (transport ``scan``); the filter re-injects it
    at 127.0.0.1:``reentry_port``, where XFORWARD is allowed and no further
    filtering happens.
    """

    filter_port: int
    reentry_port: int
    filter_concurrency: int = 2


@dataclass(frozen=True)
class PostfixConfig:
    smtpd_port: int
    sink_port: int
    myhostname: str = "postfix.scanmail.test"
    syslog_name: str = "postfix-scanmail-test"
    content_filter: AfterQueueFilter | None = None
    # Deployment 2: domains Postfix relays for; with relay_recipients set,
    # any other recipient in those domains gets "550 5.1.1" at RCPT.
    relay_domains: tuple[str, ...] = ()
    relay_recipients: tuple[str, ...] | None = None
    # Extra or overriding main.cf parameters (e.g. minimal_backoff_time).
    extra_main: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt as logged by smtp(8)/error(8)."""

    queue_id: str
    to: str
    relay: str
    status: str  # sent, deferred, bounced, ...
    dsn: str
    detail: str
    line: str


_DELIVERY_RE = re.compile(
    r"\]: (?P<qid>[0-9A-F]{6,}): to=<(?P<to>[^>]*)>.*?"
    r" relay=(?P<relay>\S+?),.*? dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+) ?(?P<detail>.*)$"
)


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1.

    All sockets are held open until every port is picked, so the ports are
    distinct; another process may still take one before it is used.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def postfix_available() -> bool:
    """True when Postfix is installed and we are root (for pytest.skipif)."""
    return os.geteuid() == 0 and all(os.access(p, os.X_OK) for p in (POSTFIX, POSTQUEUE))


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise PostfixError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def _run(argv: Sequence[str], timeout: float,
         env: Mapping[str, str] | None = None) -> CommandResult:
    """Run a command with its stdout/stderr on a pty.

    Postfix commands (postfix, postfix-script, postlog) print their errors
    to stderr only when stderr is a terminal; otherwise they go to syslog or
    the maillog file.  Some errors (e.g. a maillog_file outside
    maillog_file_prefixes) happen before any log file is usable, so a pty
    is the only way to see them.
    """
    master_fd, slave_fd = os.openpty()
    chunks: list[bytes] = []
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=slave_fd,
            stderr=slave_fd,
            env=dict(env) if env is not None else None,
            close_fds=True,
        )
    except BaseException:
        os.close(master_fd)
        os.close(slave_fd)
        raise
    os.close(slave_fd)
    deadline = time.monotonic() + timeout
    try:
        # Read until the command exits and the pty is drained.  A daemon it
        # started may keep the slave open a moment; never wait past deadline.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                proc.wait(timeout=5)
                raise PostfixError(f"{' '.join(argv)} timed out after {timeout}s: "
                                   + b"".join(chunks).decode(errors="replace"))
            ready, _, _ = select.select([master_fd], [], [], min(remaining, 0.1))
            if ready:
                try:
                    data = os.read(master_fd, 65536)
                except OSError as exc:  # EIO: every slave fd closed
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if data:
                    chunks.append(data)
                    continue
                if proc.poll() is not None:
                    break
                time.sleep(0.02)  # EOF but still running (slave closed early)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        os.close(master_fd)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return CommandResult(tuple(argv), rc, text)


def _proc_state(pid: int) -> str | None:
    """State letter from /proc/PID/stat, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    # After "postfix start" the master daemon's parent is PID 1; a PID 1 that
    # does not reap (e.g. some container inits) leaves it a zombie: dead.
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _pids_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


class PostfixInstance:
    """A private Postfix instance in ``base_dir`` (a new temp dir by default).

    Layout: base/etc (config_directory: main.cf, master.cf, maps),
    base/spool (queue_directory), base/data (data_directory),
    base/maillog (log file).
    """

    def __init__(self, config: PostfixConfig, base_dir: Path | None = None,
                 keep_dir: bool = False) -> None:
        self.config = config
        self._own_dir = base_dir is None
        self.keep_dir = keep_dir
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="pfx-", dir="/tmp"))
        self.base_dir = base_dir.resolve()
        self.config_dir = self.base_dir / "etc"
        self.queue_dir = self.base_dir / "spool"
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "maillog"
        self.master_pid: int | None = None
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None

    # ------------------------------------------------------------------ config

    def main_cf(self) -> dict[str, str]:
        c = self.config
        b = self.base_dir
        main: dict[str, str] = {
            "compatibility_level": "3.6",
            # own directories; daemon/command/meta directories stay the
            # package's (/usr/lib/postfix/sbin, /usr/sbin, /etc/postfix)
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": MAIL_OWNER,
            "setgid_group": SETGID_GROUP,
            "multi_instance_enable": "no",
            # logging: postlogd writes this file; no syslog involved
            "syslog_name": c.syslog_name,
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(b),
            # identity: never derived from gethostname()/DNS; must differ from
            # the greeting name of every SMTP server we relay to (else
            # "mail for ... loops back to myself")
            "myhostname": c.myhostname,
            "mydomain": c.myhostname.split(".", 1)[-1],
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "append_dot_mydomain": "no",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP",
            # network: loopback, IPv4 only, no DNS anywhere
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtp_connect_timeout": "5s",
            # every message leaves through the sink
            "relayhost": f"[127.0.0.1]:{c.sink_port}",
            "relay_domains": ", ".join(c.relay_domains),
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_reject_unlisted_recipient": "yes",
        }
        if c.relay_recipients is not None:
            main["relay_recipient_maps"] = f"texthash:{self.config_dir / 'relay_recipients'}"
        if c.content_filter is not None:
            f = c.content_filter
            main["content_filter"] = f"scan:[127.0.0.1]:{f.filter_port}"
            # address rewriting (canonical/virtual/masquerade) happens once,
            # after the filter, on re-entry
            main["receive_override_options"] = "no_address_mappings"
        main.update(c.extra_main)
        return main

    def master_cf(self) -> str:
        c = self.config
        # chroot is "n" everywhere: a chroot (Debian's default "y") would
        # need etc/hosts, etc/services, resolv.conf... copied into the queue
        # directory, which only Debian's init script does.
        lines = [
            "# service type  private unpriv  chroot  wakeup  maxproc command + args",
            f"127.0.0.1:{c.smtpd_port} inet n - n - - smtpd",
            "pickup    unix  n       -       n       60      1       pickup",
            "cleanup   unix  n       -       n       -       0       cleanup",
            "qmgr      unix  n       -       n       300     1       qmgr",
            "tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
            "rewrite   unix  -       -       n       -       -       trivial-rewrite",
            "bounce    unix  -       -       n       -       0       bounce",
            "defer     unix  -       -       n       -       0       bounce",
            "trace     unix  -       -       n       -       0       bounce",
            "verify    unix  -       -       n       -       1       verify",
            "flush     unix  n       -       n       1000?   0       flush",
            "proxymap  unix  -       -       n       -       -       proxymap",
            "proxywrite unix -       -       n       -       1       proxymap",
            "smtp      unix  -       -       n       -       -       smtp",
            "relay     unix  -       -       n       -       -       smtp",
            "showq     unix  n       -       n       -       -       showq",
            "error     unix  -       -       n       -       -       error",
            "retry     unix  -       -       n       -       -       error",
            "discard   unix  -       -       n       -       -       discard",
            "local     unix  -       n       n       -       -       local",
            "virtual   unix  -       n       n       -       -       virtual",
            "lmtp      unix  -       -       n       -       -       lmtp",
            "anvil     unix  -       -       n       -       1       anvil",
            "scache    unix  -       -       n       -       1       scache",
            "postlog   unix-dgram n  -       n       -       1       postlogd",
        ]
        if c.content_filter is not None:
            f = c.content_filter
            lines += [
                f"scan      unix  -       -       n       -       {f.filter_concurrency}  smtp",
                f"  -o syslog_name={c.syslog_name}/scan",
                "  -o smtp_send_xforward_command=yes",
                "  -o disable_mime_output_conversion=yes",
                "  -o smtp_generic_maps=",
                "  -o smtp_dns_support_level=disabled",
                "  -o smtp_data_done_timeout=1200s",
                f"127.0.0.1:{f.reentry_port} inet n - n - - smtpd",
                f"  -o syslog_name={c.syslog_name}/reentry",
                "  -o content_filter=",
                "  -o receive_override_options="
                "no_unknown_recipient_checks,no_header_body_checks,no_milters",
                "  -o local_recipient_maps=",
                "  -o relay_recipient_maps=",
                "  -o smtpd_restriction_classes=",
                "  -o smtpd_delay_reject=no",
                "  -o smtpd_client_restrictions=permit_mynetworks,reject",
                "  -o smtpd_helo_restrictions=",
                "  -o smtpd_sender_restrictions=",
                "  -o smtpd_relay_restrictions=permit_mynetworks,reject",
                "  -o smtpd_recipient_restrictions=permit_mynetworks,reject",
                "  -o smtpd_data_restrictions=reject_unauth_pipelining",
                "  -o smtpd_end_of_data_restrictions=",
                "  -o mynetworks=127.0.0.0/8",
                "  -o smtpd_authorized_xforward_hosts=127.0.0.0/8",
                "  -o smtpd_error_sleep_time=0",
                "  -o smtpd_soft_error_limit=1001",
                "  -o smtpd_hard_error_limit=1000",
                "  -o smtpd_client_connection_count_limit=0",
                "  -o smtpd_client_connection_rate_limit=0",
            ]
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        """Create the directory tree and configuration files (idempotent)."""
        for parent in [self.base_dir, *self.base_dir.parents]:
            # postfix-owned daemons open data_directory files by absolute path
            if parent.stat().st_mode & 0o001 == 0 and parent != self.base_dir:
                raise PostfixError(f"{parent} is not searchable by others; the {MAIL_OWNER} "
                                   "user cannot reach the instance (use a dir under /tmp)")
        self.base_dir.chmod(0o755)
        self.config_dir.mkdir(mode=0o755, exist_ok=True)
        self.queue_dir.mkdir(mode=0o755, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(self.data_dir, MAIL_OWNER, MAIL_OWNER)  # postfix-script only warns
        main = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (self.config_dir / "main.cf").write_text(main)
        (self.config_dir / "master.cf").write_text(self.master_cf())
        if self.config.relay_recipients is not None:
            (self.config_dir / "relay_recipients").write_text(
                "".join(f"{r} OK\n" for r in self.config.relay_recipients))

    # ------------------------------------------------------------- lifecycle

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_")}
        env["MAIL_CONFIG"] = str(self.config_dir)
        env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        return env

    def postfix(self, *args: str, timeout: float = 30.0, check: bool = True) -> CommandResult:
        """Run ``postfix -c CONFIG_DIR ARGS``."""
        res = _run([POSTFIX, "-c", str(self.config_dir), *args], timeout, self._env())
        if check and res.returncode != 0:
            raise PostfixError(f"postfix {' '.join(args)} failed ({res.returncode}): "
                               f"{res.output.strip()}\n--- log tail ---\n{self.log_tail()}")
        return res

    def start(self, timeout: float = 30.0) -> None:
        t0 = time.monotonic()
        self.write_config()
        # "start" runs postfix-script check-fatal (post-install create-missing
        # makes the queue subdirectories with the right owners) and master -w,
        # which returns only once the master daemon has initialized.
        self.postfix("start", timeout=timeout)
        self.master_pid = self._read_master_pid()
        ports = [self.config.smtpd_port]
        if self.config.content_filter is not None:
            ports.append(self.config.content_filter.reentry_port)
        remaining = max(1.0, timeout - (time.monotonic() - t0))
        for p in ports:
            wait_for_port(p, remaining)
        self.wait_for_log(r"daemon started", timeout=remaining, since=0)
        self.start_seconds = time.monotonic() - t0

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self) -> bool:
        pid = self.master_pid or self._read_master_pid()
        return pid is not None and _alive(pid)

    def stop(self, timeout: float = 20.0) -> None:
        """``postfix stop``; then SIGTERM/SIGKILL the master's process group.

        Idempotent; leaves no Postfix process of this instance behind.
        """
        t0 = time.monotonic()
        pid = self.master_pid or self._read_master_pid()
        if pid is not None and _alive(pid):
            with contextlib.suppress(PostfixError):
                self.postfix("stop", timeout=timeout, check=False)
        if pid is not None:
            # master is a session/process group leader; its children share
            # the group. Kill what is left, if anything.
            for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                left = _pids_in_group(pid)
                if not left:
                    break
                for p in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, sig)
                deadline = time.monotonic() + grace
                while _pids_in_group(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
            if _pids_in_group(pid):
                raise PostfixError(f"Postfix processes survive SIGKILL: {_pids_in_group(pid)}")
        self.master_pid = None
        self.stop_seconds = time.monotonic() - t0

    def cleanup(self) -> None:
        if self._own_dir and not self.keep_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PostfixInstance:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if exc_type is None:
            self.cleanup()  # keep everything for post-mortem when a test failed

    # ------------------------------------------------------------------ queue

    def flush(self, timeout: float = 30.0) -> None:
        """``postqueue -f``: retry deferred mail now (and forget dead hosts)."""
        res = _run([POSTQUEUE, "-c", str(self.config_dir), "-f"], timeout, self._env())
        if res.returncode != 0:
            raise PostfixError(f"postqueue -f failed: {res.output.strip()}")

    def queue(self, timeout: float = 30.0) -> str:
        """``postqueue -p`` output ("Mail queue is empty" when empty)."""
        res = _run([POSTQUEUE, "-c", str(self.config_dir), "-p"], timeout, self._env())
        return res.output

    def queue_is_empty(self) -> bool:
        return "Mail queue is empty" in self.queue()

    def postconf(self, name: str) -> str:
        res = _run([POSTCONF, "-c", str(self.config_dir), "-h", name], 10.0, self._env())
        return res.output.strip()

    # -------------------------------------------------------------------- log

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        """Current end of the log; pass as ``since`` to look only at newer lines."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_lines(self, since: int = 0) -> list[str]:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(since)
                return fh.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def wait_for_log(self, pattern: str, timeout: float = 10.0, since: int = 0,
                     count: int = 1) -> list[re.Match[str]]:
        """Wait until ``count`` log lines after offset ``since`` match ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = [m for m in map(rx.search, self.log_lines(since)) if m]
            if len(matches) >= count:
                return matches
            if time.monotonic() >= deadline:
                raise PostfixError(f"log has {len(matches)}/{count} lines matching {pattern!r} "
                                   f"after {timeout}s\n--- log tail ---\n{self.log_tail()}")
            time.sleep(0.05)

    def deliveries(self, since: int = 0) -> list[Delivery]:
        out = []
        for line in self.log_lines(since):
            m = _DELIVERY_RE.search(line)
            if m:
                out.append(Delivery(m["qid"], m["to"], m["relay"], m["status"], m["dsn"],
                                    m["detail"], line))
        return out

    def wait_for_delivery(self, status: str, to: str | None = None, relay: str | None = None,
                          timeout: float = 15.0, since: int = 0) -> Delivery:
        deadline = time.monotonic() + timeout
        while True:
            for d in self.deliveries(since):
                wanted = to in (None, d.to) and (relay is None or relay in d.relay)
                if d.status == status and wanted:
                    return d
            if time.monotonic() >= deadline:
                raise PostfixError(f"no status={status} to={to} relay={relay} after {timeout}s"
                                   f"\n--- log tail ---\n{self.log_tail()}")
            time.sleep(0.05)


def iter_queue_ids(text: str) -> Iterator[str]:
    """Queue ids in ``postqueue -p`` output."""
    for line in text.splitlines():
        m = re.match(r"^([0-9A-F]{6,})[*!]?\s", line)
        if m:
            yield m.group(1)
