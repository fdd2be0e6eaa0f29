"""The receiver: an aiosmtpd ESMTP server that spools each message into incoming, then says 250.

The final 250 is sent only once the spool file is complete on disk (Spool.write: tmp/,
fsync, mode 0750, rename, folder fsync); any write error answers 451 4.3.0 (issue 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import encodings.idna  # noqa: F401 - loaded now: after --user the library may be unreadable
import errno
import ipaddress
import itertools
import logging
import os
import pwd
import re
import signal
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aiosmtpd.smtp import SMTP, Envelope, Session

from scanmail.config import Config, Network
from scanmail.errors import ConfigError, GatewayError, TempFailure
from scanmail.events import clean
from scanmail.spool import Envelope as SpoolEnvelope
from scanmail.spool import Spool

log = logging.getLogger(__name__)

IDENT = "ESMTP scanmail"
MEMORY_LIMIT = 1 << 20  # larger messages are spilled to an unlinked file in tmp/ as they arrive
SPILL_BATCH = 64 << 10
READ_CHUNK = 1 << 20
MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: a path is at most 256 octets with its brackets
WRITE_THREADS = 16  # concurrent Spool.write calls: each waits on two fsyncs
SHUTDOWN_GRACE = 30.0  # seconds a stop waits for messages being committed
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f<>]")  # CR, LF, NUL and brackets break the spool format
_HELO_SAFE = re.compile(r"[^A-Za-z0-9._:\[\]-]")

Reply = str


@dataclass(frozen=True)
class Policy:
    """What the receiver accepts: local domains, trusted networks, limits."""

    hostname: str
    local_domains: frozenset[str]
    relay_networks: tuple[Network, ...]
    max_recipients: int
    max_message_size: int

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        return cls(
            hostname=config.hostname,
            local_domains=config.local_domains,
            relay_networks=config.relay_networks,
            max_recipients=config.max_recipients,
            max_message_size=config.max_message_size,
        )

    def is_trusted(self, peer: object) -> bool:
        """The client is in RELAY_NETWORKS (IPv4-mapped IPv6 counts as IPv4)."""
        ip = peer_ip(peer)
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.relay_networks)

    def is_local(self, address: str) -> bool:
        """The recipient's domain is one of LOCAL_DOMAINS (a leading dot also covers subdomains)."""
        domain = address.rpartition("@")[2].lower().rstrip(".")
        forms = {domain}
        with contextlib.suppress(UnicodeError):
            forms.add(domain.encode("idna").decode("ascii"))
        for local in self.local_domains:
            if local in forms:
                return True
            if local.startswith(".") and any(form.endswith(local) for form in forms):
                return True
        return False


def peer_ip(peer: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP address from asyncio's peername, or None."""
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        return ipaddress.ip_address(str(peer[0]).partition("%")[0])
    except ValueError:
        return None


def check_address(address: str, smtputf8: bool, sender: bool) -> Reply | None:
    """Why an envelope address cannot be accepted (an SMTP reply), or None if it can."""
    if len(address.encode("utf-8", "surrogateescape")) > MAX_ADDRESS:
        return "553 5.1.3 Address too long"
    if _FORBIDDEN.search(address):
        return "553 5.1.3 Address contains forbidden characters"
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return "553 5.6.7 Address is not valid UTF-8"
    if not address.isascii() and not smtputf8:
        return "553 5.6.7 Non-ASCII address requires SMTPUTF8"
    local, at, domain = address.rpartition("@")
    if not at and not (not sender and address.lower() == "postmaster"):
        return "553 5.1.3 Address must have a domain"
    if at and (not local or not domain):
        return "553 5.1.3 Malformed address"
    return None


def spool_sender(mail_from: str | None) -> str:
    """aiosmtpd keeps the null sender as '<>'; the spool writes it as FROM <>."""
    return "" if mail_from in (None, "<>") else str(mail_from)


def received_header(
    session: Session, envelope: Envelope, hostname: str, qid: str, tls: bool
) -> bytes:
    """The Received: trace field (RFC 5321 4.4), with CRLF line ends like the message."""
    helo = _HELO_SAFE.sub("?", str(session.host_name or ""))[:100] or "unknown"
    ip = peer_ip(session.peer)
    literal = "unknown" if ip is None else f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]"
    proto = "UTF8SMTP" if envelope.smtp_utf8 else "ESMTP" if session.extended_smtp else "SMTP"
    if tls:
        proto += "S"  # RFC 3848, RFC 6531
    lines = [
        f"Received: from {helo} ({literal})",
        f"\tby {hostname} (scanmail) with {proto} id {qid}",
    ]
    date = email.utils.formatdate(localtime=True)
    if len(envelope.rcpt_tos) == 1:
        lines.append(f"\tfor <{envelope.rcpt_tos[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


class MessageBuffer:
    """The message as it arrives: in memory up to a limit, then in an unlinked file in tmp/."""

    def __init__(self, tmp_dir: Path, memory_limit: int = MEMORY_LIMIT) -> None:
        self.tmp_dir = tmp_dir
        self.memory_limit = memory_limit
        self.chunks: list[bytes] = []
        self.pending = 0
        self.size = 0
        self.file: BinaryIO | None = None

    def add(self, data: bytes) -> None:
        """Append bytes; raises OSError if the spill file cannot be written."""
        self.chunks.append(data)
        self.size += len(data)
        self.pending += len(data)
        if self.file is None and self.size > self.memory_limit:
            # O_TMPFILE where available: no name, so a crash or a drop leaves nothing behind.
            self.file = tempfile.TemporaryFile(dir=self.tmp_dir)  # noqa: SIM115 - closed in close()
        if self.file is not None and self.pending >= SPILL_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.file is not None and self.chunks:
            self.file.write(b"".join(self.chunks))
            self.chunks = []
            self.pending = 0

    def iter_chunks(self) -> Iterator[bytes]:
        """The whole message, in chunks (read back from the spill file if there is one)."""
        if self.file is None:
            yield b"".join(self.chunks)
            return
        self.flush()
        self.file.seek(0)
        while chunk := self.file.read(READ_CHUNK):
            yield chunk

    def discard(self) -> None:
        """Drop what was received (the message will be refused), keeping only the count."""
        self.chunks = []
        self.pending = 0
        self.close()

    def close(self) -> None:
        self.chunks = []
        if self.file is not None:
            self.file.close()
            self.file = None


class Handler:
    """aiosmtpd hooks: envelope checks and anti-relay at MAIL and RCPT."""

    def __init__(self, policy: Policy, spool: Spool) -> None:
        self.policy = policy
        self.spool = spool

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        # aiosmtpd offers AUTH after STARTTLS with mechanisms that always fail: an MX has
        # no users, so say nothing about AUTH at all.
        session.host_name = hostname
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Reply:
        sender = spool_sender(address)
        problem = check_address(sender, bool(envelope.smtp_utf8), sender=True) if sender else None
        if problem:
            log.info("qid=- event=receive verdict=refused reason=sender client=%s from=<%s>",
                     _client(session), clean(sender))
            return problem
        size = _size_option(options)
        free = _free_bytes(self.spool.tmp) if size else None
        if size and free is not None and size > free:
            return "452 4.3.1 Insufficient system storage"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Reply:
        problem = check_address(address, bool(envelope.smtp_utf8), sender=False)
        if problem:
            return problem
        if len(envelope.rcpt_tos) >= self.policy.max_recipients:
            return "452 4.5.3 Too many recipients"
        unqualified = "@" not in address  # RFC 5321 4.5.1: <postmaster> must be accepted
        allowed = unqualified or self.policy.is_local(address)
        if not (allowed or self.policy.is_trusted(session.peer)):
            log.info(
                "qid=- event=receive verdict=refused reason=relay client=%s from=<%s> rcpt=<%s>",
                _client(session), clean(spool_sender(envelope.mail_from)), clean(address),
            )
            return "550 5.7.1 Relaying denied"
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_exception(self, error: Exception) -> Reply:
        log.error("receiver error: %s", error, exc_info=error)
        return "451 4.3.0 Internal error; try again later"


def _client(session: Session) -> str:
    ip = peer_ip(session.peer)
    return "unknown" if ip is None else str(ip)


def _size_option(options: list[str]) -> int:
    for option in options:
        key, _, value = option.partition("=")
        if key.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


def _free_bytes(folder: Path) -> int | None:
    """Bytes the service user may still write there; None if unknown (the write will tell)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class Connections:
    """The connections being served, shared by every GatewaySMTP of one server."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: set[GatewaySMTP] = set()
        self.committing = 0


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with a connection limit and DATA streamed to the spool."""

    def __init__(
        self,
        handler: Handler,
        connections: Connections,
        executor: ThreadPoolExecutor,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.gateway = handler
        self.connections = connections
        self.executor = executor
        self.last_touch = 0.0

    async def _handle_client(self) -> None:
        if len(self.connections.active) >= self.connections.limit:
            assert self.session is not None
            log.warning("qid=- event=receive verdict=refused reason=connections client=%s limit=%d",
                        _client(self.session), self.connections.limit)
            await self.push(f"421 4.7.0 {self.hostname} Too many connections, try again later")
            if self.transport is not None:
                self.transport.close()
            return
        self.connections.active.add(self)
        try:
            await super()._handle_client()
        finally:
            self.connections.active.discard(self)

    def _touch(self) -> None:
        """Keep the idle timer from firing while data is flowing (RFC 5321 4.5.3.2.6)."""
        now = self.loop.time()
        if now - self.last_touch >= 1.0:
            self.last_touch = now
            self._reset_timeout()

    async def smtp_DATA(self, arg: str) -> None:
        """Receive the message into a MessageBuffer, spool it, and only then answer 250."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        buffer = MessageBuffer(self.gateway.spool.tmp)
        try:
            problem = await self._receive(buffer)
            if problem is None:
                problem = await self._commit(buffer)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(problem)
        finally:
            buffer.close()

    async def _receive(self, buffer: MessageBuffer) -> Reply | None:
        """Read up to the lone dot; a reply if the message must be refused, else None."""
        limit = self.gateway.policy.max_message_size
        problem: Reply | None = None
        line_start = True
        while True:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                # A line past 1000 octets: drain it, refuse at the end (RFC 5321 4.5.3.1.6).
                line = await self._reader.read(exc.consumed)
                problem = problem or "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
                buffer.discard()
                line_start = False
                continue
            self._touch()
            if line_start and line == b".\r\n":
                return problem
            at_start, line_start = line_start, True
            if problem:
                continue
            if buffer.size + len(line) > limit:
                problem = "552 5.3.4 Message too big for system"
                buffer.discard()
                continue
            if at_start and line.startswith(b"."):
                line = line[1:]  # RFC 5321 4.5.2: undo dot-stuffing
            try:
                buffer.add(line)
            except OSError as exc:
                log.error("cannot buffer message in %s: %s", buffer.tmp_dir, exc.strerror)
                problem = "451 4.3.0 Error writing message; try again later"
                buffer.discard()

    async def _commit(self, buffer: MessageBuffer) -> Reply:
        """Write the spool file in a worker thread; 250 once it is complete on disk."""
        assert self.envelope is not None and self.session is not None
        spool = self.gateway.spool
        envelope = self.envelope
        tls = self.session.ssl is not None
        session = self.session
        hostname = self.hostname
        record = SpoolEnvelope(spool_sender(envelope.mail_from), tuple(envelope.rcpt_tos))

        def write() -> str:
            # In the worker thread: choosing a free name stats every folder, and it is slow.
            qid = spool.new_qid()
            header = received_header(session, envelope, hostname, qid, tls)
            spool.write("incoming", record, itertools.chain([header], buffer.iter_chunks()), qid)
            return qid

        self.connections.committing += 1
        try:
            qid = await self.loop.run_in_executor(self.executor, write)
        except (GatewayError, OSError, ValueError) as exc:
            log.error("qid=- event=receive verdict=tempfail reason=spool client=%s detail=%r",
                      _client(self.session), clean(str(exc)))
            return "451 4.3.0 Error writing message to spool; try again later"
        finally:
            self.connections.committing -= 1
        log.info(
            "qid=%s event=receive from=<%s> rcpts=%d size=%d verdict=accepted client=%s tls=%s",
            qid, clean(record.sender), len(record.recipients), buffer.size,
            _client(self.session), "yes" if tls else "no",
        )
        return f"250 2.0.0 OK queued as {qid}"


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The STARTTLS context when TLS_CERT and TLS_KEY are set; ConfigError if they are bad."""
    if not config.tls_cert and not config.tls_key:
        return None
    if not (config.tls_cert and config.tls_key):
        raise ConfigError("TLS_CERT and TLS_KEY must be set together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"TLS_CERT/TLS_KEY: cannot load {config.tls_cert}: {exc}") from None
    return context


def drop_privileges(user: str) -> None:
    """Become the service user after binding (port 25 needs root or CAP_NET_BIND_SERVICE)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"--user {user}: no such user") from None
    if os.getuid() == entry.pw_uid:
        return
    if os.getuid() != 0:
        raise ConfigError(f"--user {user}: only root can change to another user")
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


class Receiver:
    """One listening scanmail-smtpd: bind, serve, stop cleanly."""

    def __init__(self, config: Config, listen: tuple[str, int] | None = None) -> None:
        self.config = config
        self.listen = listen or config.listen
        self.spool = Spool(config.spool_dir)
        self.handler = Handler(Policy.from_config(config), self.spool)
        self.connections = Connections(config.max_connections)
        self.tls = tls_context(config)
        self.executor = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="spool")
        self.server: asyncio.Server | None = None

    def protocol(self) -> GatewaySMTP:
        return GatewaySMTP(
            self.handler,
            self.connections,
            self.executor,
            data_size_limit=self.config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.config.hostname,
            ident=IDENT,
            tls_context=self.tls,
            timeout=self.config.smtp_timeout,
        )

    async def start(self) -> None:
        """Check the spool and bind the listening socket."""
        self.spool.check()
        host, port = self.listen
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(self.protocol, host or None, port,
                                                   reuse_address=True)
        except PermissionError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror} (start as root with --user, "
                "or grant CAP_NET_BIND_SERVICE)"
            ) from exc
        except OSError as exc:
            hint = " (is another MTA running?)" if exc.errno == errno.EADDRINUSE else ""
            raise TempFailure(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from exc
        log.info("listening on %s:%d", host, port)

    async def stop(self) -> None:
        """Stop listening, let messages being written finish, close every connection."""
        if self.server is not None:
            self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE
        while self.connections.committing and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for protocol in list(self.connections.active):
            if protocol.transport is not None:
                protocol.transport.close()
        if self.server is not None:
            await self.server.wait_closed()
        await loop.run_in_executor(None, self.executor.shutdown)


async def serve(
    config: Config,
    stop: asyncio.Event,
    listen: tuple[str, int] | None = None,
    user: str | None = None,
    ready: Callable[[Receiver], None] | None = None,
) -> None:
    """Run a receiver until stop is set; drop to user once the socket is bound."""
    # aiosmtpd logs every connection and command at INFO: keep syslog to our decision lines.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    receiver = Receiver(config, listen)
    await receiver.start()
    try:
        if user:
            drop_privileges(user)
        if ready is not None:
            ready(receiver)
        await stop.wait()
    finally:
        await receiver.stop()


def run(config: Config, listen: tuple[str, int] | None = None, user: str | None = None) -> None:
    """Serve until SIGTERM or SIGINT (the scanmail-smtpd daemon)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        await serve(config, stop, listen, user)
        log.info("stopped")

    asyncio.run(main())
