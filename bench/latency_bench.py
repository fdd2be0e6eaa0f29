"""The gateway's own delay as services: 250 at the receiver to receipt at the internal server.

Starts the three services as real processes with their default settings (scanmail-smtpd,
`scanmail --watch`, scanmail-fwd) on a temporary spool, a private clamd, and an aiosmtpd
sink in this process standing in for the internal server. Sends clean mail at each
--rates value (messages per second, one SMTP session each, on a fixed schedule) for
--seconds each, and prints the delay from the gateway's 250 to the sink's receipt:
median, p90, p99, max, and how many arrived (all must, each once). Then measures the
CPU seconds each service uses over --idle seconds with no mail (issue 11: idle costs
nothing). Targets: p99 <= 0.1 s at 10 msg/s, <= 0.25 s at 50 msg/s.

    .venv/bin/python bench/latency_bench.py [--rates 10 50] [--seconds 20] [--idle 60]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from scanmail.admin.init import create_spool
from scanmail.testing import PrivateClamd

RCPT = "bob@corp.example"
SERVICES = {"scanmail-smtpd": [], "scanmail": ["--watch"], "scanmail-fwd": []}
TARGETS = {10.0: 0.1, 50.0: 0.25}
DRAIN_LIMIT = 60.0  # seconds to wait for the last messages after sending stops


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sink:
    """The internal server: the monotonic time each bench token arrived, and how often."""

    arrived: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.monotonic()
        content: Any = envelope.content
        for line in bytes(content).split(b"\r\n"):
            if line.startswith(b"X-Bench-Id: "):
                token = line[12:].decode()
                with self.lock:
                    if token in self.arrived:
                        self.duplicates += 1
                    else:
                        self.arrived[token] = now
                break
        return "250 OK"


def message(token: str) -> bytes:
    text = (
        f"From: sender@ext.example\r\nTo: {RCPT}\r\nSubject: bench {token}\r\n"
        f"Message-ID: <{token}@ext.example>\r\nX-Bench-Id: {token}\r\n\r\n"
    )
    return (text + "A clean message, a few lines long, as most mail is.\r\n" * 20).encode()


def send_one(port: int, token: str, accepted: dict[str, float]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail("sender@ext.example", [RCPT], message(token))
        accepted[token] = time.monotonic()  # the 250 after DATA has just come


def run_rate(port: int, sink: Sink, rate: float, seconds: float) -> dict[str, float]:
    """Send at a steady rate; the delays of every message, in seconds."""
    accepted: dict[str, float] = {}
    tokens = [secrets.token_hex(8) for _ in range(int(rate * seconds))]
    start = time.monotonic() + 0.2
    with ThreadPoolExecutor(max(4, int(rate))) as pool:
        futures = []
        for i, token in enumerate(tokens):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(send_one, port, token, accepted))
        for future in futures:
            future.result()
    deadline = time.monotonic() + DRAIN_LIMIT
    while time.monotonic() < deadline:
        with sink.lock:
            if all(token in sink.arrived for token in tokens):
                break
        time.sleep(0.05)
    with sink.lock:
        return {t: sink.arrived[t] - accepted[t] for t in tokens if t in sink.arrived}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (and its waited-for children) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("scanmail-smtpd did not start") from None
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="scanmail-latency-"))
    spool = base / "spool"
    create_spool(spool)
    clamd = PrivateClamd(base / "clamd")
    port, relay = free_port(), free_port()
    env = spool / "etc" / "scanmail.env"
    env.write_text(
        f"SPOOL_DIR={spool}\nCLAMD_SOCKET={clamd.socket}\nLISTEN=127.0.0.1:{port}\n"
        f"LOCAL_DOMAINS=corp.example\nRELAY_HOST=127.0.0.1\nRELAY_PORT={relay}\n"
    )
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=relay)
    controller.start()
    bin_dir = Path(sys.executable).parent
    processes: dict[str, subprocess.Popen[bytes]] = {}
    failed = False
    clamd.start()
    try:
        for name, extra in SERVICES.items():  # their log lines (stderr without syslog) to a file
            with open(base / f"{name}.log", "ab") as log:
                processes[name] = subprocess.Popen(
                    [str(bin_dir / name), "--config", str(env), *extra], stderr=log)
        wait_for_port(port, processes["scanmail-smtpd"])
        run_rate(port, sink, 2.0, 2.0)  # warm up: clamd's first scans, connections
        print(f"gateway delay, 250 at scanmail-smtpd -> receipt at the relay "
              f"({args.seconds:g} s per rate, default settings)")
        for rate in args.rates:
            busy = {name: cpu_seconds(p.pid) for name, p in processes.items()}
            delays = list(run_rate(port, sink, rate, args.seconds).values())
            busy = {name: cpu_seconds(p.pid) - busy[name] for name, p in processes.items()}
            sent = int(rate * args.seconds)
            p99 = percentile(delays, 0.99)
            target = TARGETS.get(rate)
            verdict = "" if target is None else ("ok" if p99 <= target else "MISSED")
            failed |= len(delays) != sent or bool(verdict == "MISSED")
            print(f"  {rate:5g} msg/s: median {percentile(delays, 0.5):.3f} s  "
                  f"p90 {percentile(delays, 0.9):.3f} s  p99 {p99:.3f} s  "
                  f"max {max(delays, default=0):.3f} s  arrived {len(delays)}/{sent}"
                  + (f"  target p99 <= {target:g} s: {verdict}" if target else ""))
            print("           CPU ms per message: " + ", ".join(
                f"{name} {1000 * used / max(1, len(delays)):.1f}" for name, used in busy.items()))
        print(f"  duplicates at the relay: {sink.duplicates}; load average (1 min) now: "
          f"{os.getloadavg()[0]:.1f}")
        failed |= sink.duplicates > 0
        if args.idle > 0:
            time.sleep(2)  # the last connections close
            before = {name: cpu_seconds(p.pid) for name, p in processes.items()}
            time.sleep(args.idle)
            for name, process in processes.items():
                used = cpu_seconds(process.pid) - before[name]
                print(f"  idle {args.idle:g} s: {name:<15} {used:.2f} CPU seconds")
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            process.wait(60)
        controller.stop()
        clamd.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
