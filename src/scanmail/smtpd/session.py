"""The SMTP session: envelope checks at MAIL and RCPT, DATA spooled before the final 250."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from scanmail import dsnparams
from scanmail.dsnparams import DsnParams, RcptParams
from scanmail.errors import GatewayError
from scanmail.hops import HopCounter, loop_reply
from scanmail.smtpd.acceptance import Policy, check_address, peer_ip
from scanmail.smtpd.buffer import MessageBuffer
from scanmail.smtpd.received import received_header, spool_sender
from scanmail.smtpd.recipients import Verifier
from scanmail.smtpd.relaysafe import raw_path, routing_problem
from scanmail.smtpd.xforward import EHLO_LINE, Forwarded, apply
from scanmail.spool import Envelope as SpoolEnvelope
from scanmail.spool import Spool
from scanmail.untrusted import one_line

log = logging.getLogger(__name__)

Reply = str


class Handler:
    """aiosmtpd hooks: envelope checks and anti-relay at MAIL and RCPT."""

    def __init__(self, policy: Policy, spool: Spool, verifier: Verifier | None = None) -> None:
        self.policy = policy
        self.spool = spool
        self.verifier = verifier or Verifier("no", None, None)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        # aiosmtpd offers AUTH after STARTTLS with mechanisms that always fail: an MX has
        # no users, so say nothing about AUTH at all.
        session.host_name = hostname
        lines = [line for line in responses if not line[4:].upper().startswith("AUTH")]
        lines[-1:-1] = ["250-DSN", "250-ENHANCEDSTATUSCODES"]  # RFC 3461, RFC 2034
        if self.policy.is_trusted(session.peer):  # Postfix in front: say who the client was
            lines.insert(len(lines) - 1, "250-" + EHLO_LINE)
        return lines

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Reply:
        sender = spool_sender(address)
        problem = check_address(sender, bool(envelope.smtp_utf8), sender=True) if sender else None
        if problem:
            log.info("qid=- event=receive verdict=refused reason=sender client=%s from=<%s>",
                     _client(session), one_line(sender))
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
        trusted = self.policy.is_trusted(session.peer)
        raw = server.rcpt_raw if isinstance(server, GatewaySMTP) else address
        routed = None if trusted else routing_problem(address, raw)
        if routed:
            log.info(
                "qid=- event=receive verdict=refused reason=routed client=%s from=<%s> rcpt=%s",
                _client(session), one_line(spool_sender(envelope.mail_from)), one_line(raw),
            )
            return routed
        unqualified = "@" not in address  # RFC 5321 4.5.1: <postmaster> must be accepted
        allowed = unqualified or self.policy.is_local(address)
        if not (allowed or trusted):
            log.info(
                "qid=- event=receive verdict=refused reason=relay client=%s from=<%s> rcpt=<%s>",
                _client(session), one_line(spool_sender(envelope.mail_from)), one_line(address),
            )
            return "550 5.7.1 Relaying denied"
        if allowed and not unqualified and not trusted:
            unknown = await self._verify(address)
            if unknown:
                log.info("qid=- event=receive verdict=refused reason=recipient client=%s "
                         "from=<%s> rcpt=<%s> reply=%r", _client(session),
                         one_line(spool_sender(envelope.mail_from)), one_line(address),
                         one_line(unknown))
                return unknown
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def _verify(self, address: str) -> Reply | None:
        """Whether the internal server knows the recipient (before the 250, never a bounce)."""
        if not self.verifier.blocking:
            return self.verifier.verdict(address)
        return await asyncio.get_running_loop().run_in_executor(
            None, self.verifier.verdict, address)

    async def handle_exception(self, error: Exception) -> Reply:
        log.error("receiver error: %s", error, exc_info=error)
        return "451 4.3.0 Internal error; try again later"


def _split_command(arg: str | None, keyword: str) -> tuple[str, str, list[str]]:
    """MAIL/RCPT argument: (the keyword as written, the path, the parameters)."""
    text = arg or ""
    head = text[: len(keyword)]
    if head.upper() != keyword:
        return "", text, []
    text = text[len(keyword):]
    stripped = text.lstrip()
    lead = text[: len(text) - len(stripped)]
    if stripped.startswith("<"):
        end = stripped.find(">")
        end = len(stripped) if end < 0 else end + 1
    else:
        end = len(stripped.split(" ", 1)[0])
    return head + lead, stripped[:end], stripped[end:].split()


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

    def __init__(self, limit: int, per_client: int | None = None) -> None:
        self.limit = limit
        self.per_client = per_client or limit
        self.active: set[GatewaySMTP] = set()
        self.clients: dict[str, int] = {}
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
        self.rcpt_raw = ""
        self.forwarded = Forwarded()
        self.dsn = DsnParams()

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()  # type: ignore[no-untyped-call]
        self.forwarded = Forwarded()  # XFORWARD lasts one transaction
        self.dsn = DsnParams()

    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix's XFORWARD, from RELAY_NETWORKS only, before MAIL FROM."""
        assert self.session is not None and self.envelope is not None
        if not self.gateway.policy.is_trusted(self.session.peer):
            await self.push("550 5.7.0 Error: insufficient authorization")
            return
        if self.envelope.mail_from:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        problem = apply(self.forwarded, arg or "")
        await self.push(problem or "250 2.0.0 Ok")

    def client_text(self) -> str:
        """The client for log lines: the XFORWARDed one when there is one."""
        assert self.session is not None
        if self.forwarded.addr is not None:
            return f"{self.forwarded.addr} via={_client(self.session)}"
        return _client(self.session)

    async def _handle_client(self) -> None:
        if len(self.connections.active) >= self.connections.limit:
            assert self.session is not None
            log.warning("qid=- event=receive verdict=refused reason=connections client=%s limit=%d",
                        _client(self.session), self.connections.limit)
            await self.push(f"421 4.7.0 {self.hostname} Too many connections, try again later")
            if self.transport is not None:
                self.transport.close()
            return
        client = _client(self.session) if self.session is not None else "unknown"
        clients = self.connections.clients
        if clients.get(client, 0) >= self.connections.per_client:
            # One client must not hold every slot (issue 14, item 4).
            log.warning("qid=- event=receive verdict=refused reason=client-connections "
                        "client=%s limit=%d", client, self.connections.per_client)
            await self.push(f"421 4.7.0 {self.hostname} Too many connections from your "
                            "address, try again later")
            if self.transport is not None:
                self.transport.close()
            return
        self.connections.active.add(self)
        clients[client] = clients.get(client, 0) + 1
        try:
            await super()._handle_client()
        finally:
            self.connections.active.discard(self)
            clients[client] -= 1
            if not clients[client]:
                del clients[client]

    def _touch(self) -> None:
        """Keep the idle timer from firing while data is flowing (RFC 5321 4.5.3.2.6)."""
        now = self.loop.time()
        if now - self.last_touch >= 1.0:
            self.last_touch = now
            self._reset_timeout()

    async def smtp_MAIL(self, arg: str | None) -> None:
        """Take RET and ENVID (RFC 3461) off the line; aiosmtpd refuses what it does not know."""
        self.dsn = DsnParams()
        keyword, path, params = _split_command(arg, "FROM:")
        rest = []
        for param in params:
            key, _, value = param.partition("=")
            if key.upper() == "RET":
                if value.upper() not in ("FULL", "HDRS") or self.dsn.ret:
                    await self.push("501 5.5.4 Bad RET parameter")
                    return
                self.dsn.ret = value.upper()
            elif key.upper() == "ENVID":
                if not dsnparams.valid_xtext(value, 100) or self.dsn.envid:
                    await self.push("501 5.5.4 Bad ENVID parameter")
                    return
                self.dsn.envid = value
            else:
                rest.append(param)
        await super().smtp_MAIL(None if arg is None else " ".join([keyword + path, *rest]))

    async def smtp_RCPT(self, arg: str | None) -> None:
        """Keep the path as written (aiosmtpd drops a source route and unquotes), and the
        NOTIFY and ORCPT parameters (RFC 3461) of each recipient accepted."""
        keyword, path, params = _split_command(arg, "TO:")
        self.rcpt_raw = raw_path(path)
        notify: tuple[str, ...] | None = None
        orcpt: str | None = None
        rest = []
        for param in params:
            key, _, value = param.partition("=")
            if key.upper() == "NOTIFY":
                notify = dsnparams.parse_notify(value)
                if notify is None:
                    await self.push("501 5.5.4 Bad NOTIFY parameter")
                    return
            elif key.upper() == "ORCPT":
                kind, semi, text = value.partition(";")
                if not semi or not kind or not dsnparams.valid_xtext(text):
                    await self.push("501 5.5.4 Bad ORCPT parameter")
                    return
                orcpt = value
            else:
                rest.append(param)
        assert self.envelope is not None
        before = len(self.envelope.rcpt_tos)
        await super().smtp_RCPT(None if arg is None else " ".join([keyword + path, *rest]))
        if len(self.envelope.rcpt_tos) > before and (notify or orcpt):
            self.dsn.rcpts[self.envelope.rcpt_tos[-1]] = RcptParams(notify, orcpt)

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
            self._set_post_data_state()
            await self.push(problem)
        finally:
            buffer.close()

    async def _receive(self, buffer: MessageBuffer) -> Reply | None:
        """Read up to the lone dot; a reply if the message must be refused, else None."""
        limit = self.gateway.policy.max_message_size
        max_hops = self.gateway.policy.max_hops
        hops = HopCounter()
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
                if problem is None and hops.hops >= max_hops:  # ours would be one too many
                    assert self.session is not None
                    log.warning("qid=- event=receive verdict=refused reason=loop client=%s "
                                "hops=%d", _client(self.session), hops.hops)
                    problem = "554 " + loop_reply(hops.hops + 1, max_hops)
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
            if at_start:
                hops.feed(line)
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
        forwarded = self.forwarded
        dsn = self.dsn
        record = SpoolEnvelope(spool_sender(envelope.mail_from), tuple(envelope.rcpt_tos))

        def write() -> str:
            # In the worker thread: choosing a free name stats every folder, and it is slow.
            qid = spool.new_qid()
            header = received_header(session, envelope, hostname, qid, tls, forwarded)
            dsnparams.save(spool.var, qid, dsn)  # before the file is complete: never missing
            spool.write("incoming", record, itertools.chain([header], buffer.iter_chunks()), qid)
            return qid

        self.connections.committing += 1
        try:
            qid = await self.loop.run_in_executor(self.executor, write)
        except (GatewayError, OSError, ValueError) as exc:
            log.error("qid=- event=receive verdict=tempfail reason=spool client=%s detail=%r",
                      _client(self.session), one_line(str(exc)))
            return "451 4.3.0 Error writing message to spool; try again later"
        finally:
            self.connections.committing -= 1
        log.info(
            "qid=%s event=receive from=<%s> rcpts=%d size=%d verdict=accepted client=%s tls=%s",
            qid, one_line(record.sender), len(record.recipients), buffer.size,
            self.client_text(), "yes" if tls else "no",
        )
        return f"250 2.0.0 OK queued as {qid}"
