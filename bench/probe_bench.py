"""Benchmark recipient verification at RCPT: what a probe of a real Postfix costs.

    .venv/bin/python bench/probe_bench.py [--rcpts 200]   (as root, Debian's postfix)

Starts a private Postfix (tests/postfix_instance.py) that knows RCPTS users, and the
receiver three times: RECIPIENT_VERIFY=no, probe with a cold cache, probe with a warm
cache. One client session sends RCPT for every user; the time per RCPT is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers.postfix_instance import PostfixConfig, PostfixInstance, free_ports
from scanmail.admin.init import create_spool
from scanmail.config import Config
from scanmail.smtpd import server


def session(port: int, rcpts: list[str]) -> float:
    """Seconds per RCPT in one session (RSET every 50, MAX_RECIPIENTS is 100)."""
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo("bench.example")
        start = time.perf_counter()
        for i, rcpt in enumerate(rcpts):
            if i % 50 == 0:
                smtp.rset()
                smtp.mail("ann@ext.example")
            code, _ = smtp.rcpt(rcpt)
            assert code == 250, (rcpt, code)
        return (time.perf_counter() - start) / len(rcpts)


def run_receiver(config: Config, port: int, users: list[str]) -> tuple[float, float]:
    """The receiver in a thread; two sessions (cold cache, warm cache) against it."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    def serve() -> None:
        loop.run_until_complete(server.serve(
            config, stop, ("127.0.0.1", port), ready=lambda r: ready.set()))

    thread = threading.Thread(target=serve)
    thread.start()
    assert ready.wait(10)
    try:
        return session(port, users), session(port, users)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rcpts", type=int, default=200)
    args = parser.parse_args()
    users = [f"user{i}@corp.example" for i in range(args.rcpts)]
    pf_port, sink_port, gw_port = free_ports(3)
    with tempfile.TemporaryDirectory() as tmp, PostfixInstance(PostfixConfig(
        smtpd_port=pf_port, sink_port=sink_port, relay_domains=("corp.example",),
        relay_recipients=tuple(users),
    )):
        root = Path(tmp) / "spool"
        create_spool(root)
        for mode in ("no", "probe"):
            config = Config.from_mapping({
                "SPOOL_DIR": str(root), "HOSTNAME": "gw.bench.example",
                "LOCAL_DOMAINS": "corp.example", "RELAY_NETWORKS": "192.0.2.0/24",
                "RELAY_HOST": "127.0.0.1", "RELAY_PORT": str(pf_port),
                "RECIPIENT_VERIFY": mode,
            })
            cold, warm = run_receiver(config, gw_port, users)
            label = "no verification" if mode == "no" else "probe"
            print(f"{label:16} first RCPT of each user {cold * 1000:7.2f} ms, "
                  f"again {warm * 1000:7.2f} ms ({len(users)} users)")


if __name__ == "__main__":
    main()
