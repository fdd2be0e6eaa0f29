"""The receiver: an aiosmtpd ESMTP server that spools each message into incoming, then says 250.

The final 250 is sent only once the spool file is complete on disk (Spool.write: tmp/,
fsync, mode 0750, rename, folder fsync); any write error answers 451 4.3.0 (issue 3).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import pwd
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from scanmail.config import Config
from scanmail.errors import ConfigError, TempFailure
from scanmail.smtpd.acceptance import Policy
from scanmail.smtpd.listener import dual_stack, is_dual_stack, shown
from scanmail.smtpd.recipients import Verifier
from scanmail.smtpd.session import Connections, GatewaySMTP, Handler
from scanmail.smtpd.tls import tls_context
from scanmail.spool import Spool

log = logging.getLogger(__name__)

IDENT = "ESMTP scanmail"
WRITE_THREADS = 16  # concurrent Spool.write calls: each waits on two fsyncs
SHUTDOWN_GRACE = 30.0  # seconds a stop waits for messages being committed


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
        self.handler = Handler(Policy.from_config(config), self.spool,
                               Verifier.from_config(config))
        self.connections = Connections(config.max_connections, config.max_connections_per_client)
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
        where = shown(host, port)
        loop = asyncio.get_running_loop()
        try:
            if is_dual_stack(host):
                sock, where = dual_stack(port)
                self.server = await loop.create_server(self.protocol, sock=sock)
            else:
                self.server = await loop.create_server(self.protocol, host or None, port,
                                                       reuse_address=True)
        except PermissionError as exc:
            raise ConfigError(
                f"cannot listen on {where}: {exc.strerror} (start as root with --user, "
                "or grant CAP_NET_BIND_SERVICE)"
            ) from exc
        except OSError as exc:
            hint = " (is another MTA running?)" if exc.errno == errno.EADDRINUSE else ""
            raise TempFailure(f"cannot listen on {where}: {exc.strerror}{hint}") from exc
        log.info("listening on %s", where)

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
        await loop.run_in_executor(None, self.handler.verifier.close)


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
