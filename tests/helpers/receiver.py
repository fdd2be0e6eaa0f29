"""The real receiver (scanmail-smtpd's server.serve) in a thread on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from helpers.smtp_sink import free_port
from scanmail.config import Config
from scanmail.smtpd import server


@contextlib.contextmanager
def running(config: Config, port: int | None = None, host: str = "127.0.0.1") -> Iterator[int]:
    """server.serve in a thread on a loopback port (host "::": IPv4 and IPv6); yields the
    port; always stops."""
    port = port or free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    def main() -> None:
        try:
            loop.run_until_complete(
                server.serve(config, stop, (host, port), ready=lambda r: ready.set())
            )
        finally:
            ready.set()  # an exception here fails the test as an unhandled thread exception
            loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(10) and thread.is_alive(), "receiver did not start"
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        assert not thread.is_alive()
