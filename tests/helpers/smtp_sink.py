"""A real SMTP sink on 127.0.0.1 for the tests: records envelopes, answers as it is told."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    """A port free on 127.0.0.1 now (aiosmtpd 1.4.6's Controller(port=0) cannot probe)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass
class Received:
    """One message the sink accepted."""

    sender: str
    recipients: list[str]
    content: bytes
    options: list[str]


@dataclass
class SinkHandler:
    """Records accepted messages; rcpt_replies and data_replies script other answers.

    data_ok is the answer to an accepted message (a real MTA's names its queue id).
    """

    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    data_ok: str = "250 2.0.0 OK"
    messages: list[Received] = field(default_factory=list)
    transactions: int = 0
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        options: list[str],
    ) -> str:
        with self.lock:
            scripted = self.rcpt_replies.get(address)
            reply = scripted.pop(0) if scripted else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.transactions += 1
            reply = self.data_replies.pop(0) if self.data_replies else None
            if reply:
                return reply
            self.messages.append(
                Received(
                    sender=str(envelope.mail_from),
                    recipients=list(envelope.rcpt_tos),
                    content=bytes(envelope.original_content or b""),
                    options=list(envelope.mail_options),
                )
            )
        return self.data_ok

    def deliveries(self) -> Iterator[tuple[str, bytes]]:
        """(recipient, content) for every accepted recipient of every message."""
        for message in self.messages:
            for rcpt in message.recipients:
                yield rcpt, message.content


class Sink:
    """An aiosmtpd Controller on a fixed loopback port that can be stopped and restarted."""

    def __init__(self, port: int | None = None, **smtp: Any) -> None:
        self.port = port or free_port()
        self.handler = SinkHandler()
        self.smtp = {"enable_SMTPUTF8": True, **smtp}
        self.controller: Controller | None = None

    def start(self) -> Sink:
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10, **self.smtp
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
