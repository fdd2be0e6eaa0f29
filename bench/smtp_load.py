"""Load test for scanmail-smtpd: many concurrent SMTP clients on loopback, a fixed message count.

Starts a real scanmail-smtpd on a private spool, sends --messages messages from --clients
client threads, then checks that every message answered 250 is in incoming exactly once
(and nothing else is). Prints messages/second accepted and the time to the final 250.

    .venv/bin/python bench/smtp_load.py --messages 5000 --clients 50
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import secrets
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from scanmail.admin.init import create_spool
from scanmail.spool import list_complete, read_spool_file

RCPT = "bob@corp.example"
SOCKET_TIMEOUT = 60.0
RUN_LIMIT = 900.0  # seconds: the whole run is bounded


@dataclass
class Tally:
    """What the clients saw, shared between their threads."""

    accepted: list[str] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)
    to_250: list[float] = field(default_factory=list)  # end of data sent -> 250 received
    session: list[float] = field(default_factory=list)  # MAIL FROM -> 250 after DATA
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_message(token: str, size: int) -> bytes:
    """A plain message of about size bytes carrying its token in a header."""
    head = (
        f"From: load@ext.example\r\nTo: {RCPT}\r\nSubject: load {token}\r\n"
        f"X-Bench-Id: {token}\r\nMessage-ID: <{token}@ext.example>\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def sizes(mean: int) -> itertools.cycle[int]:
    """A spread around the mean: most mail is small, some is larger."""
    return itertools.cycle([mean // 4, mean // 2, mean, mean, mean * 2, mean * 4 // 3])


def client(port: int, plan: list[tuple[str, int]], per_connection: int, tally: Tally,
           deadline: float) -> None:
    """Take messages from the plan until it is empty, per_connection per SMTP session."""
    while time.monotonic() < deadline:
        with tally.lock:
            batch = [plan.pop() for _ in range(min(per_connection, len(plan)))]
        if not batch:
            return
        try:
            with smtplib.SMTP("127.0.0.1", port, "bench.local", timeout=SOCKET_TIMEOUT) as smtp:
                smtp.ehlo()
                for token, size in batch:
                    send_one(smtp, token, build_message(token, size), tally)
        except (OSError, smtplib.SMTPException) as exc:
            with tally.lock:
                tally.errors[type(exc).__name__] += 1


def send_one(smtp: smtplib.SMTP, token: str, message: bytes, tally: Tally) -> None:
    started = time.perf_counter()
    code, _ = smtp.mail("load@ext.example", [f"SIZE={len(message)}"])
    if code == 250:
        code, _ = smtp.rcpt(RCPT)
    if code != 250:
        smtp.rset()
        with tally.lock:
            tally.refused[code] += 1
        return
    # smtplib.data() sends the whole message and the final dot, then waits for the reply:
    # time the wait separately by sending the body ourselves.
    code, _ = smtp.docmd("DATA")
    if code != 354:
        with tally.lock:
            tally.refused[code] += 1
        return
    body = re.sub(rb"(?m)^\.", b"..", message)  # RFC 5321 4.5.2 dot-stuffing
    smtp.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
    sent = time.perf_counter()
    code, _ = smtp.getreply()
    done = time.perf_counter()
    with tally.lock:
        if code == 250:
            tally.accepted.append(token)
            tally.to_250.append(done - sent)
            tally.session.append(done - started)
        else:
            tally.refused[code] += 1


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def verify(incoming: Path, accepted: list[str]) -> tuple[int, int, int]:
    """(missing, duplicated, unexpected) tokens between the 250s and the incoming folder."""
    found: Counter[str] = Counter()
    for path in list_complete(incoming):
        with read_spool_file(path).open_message() as handle:
            head = handle.read(4096)
        for line in head.split(b"\r\n"):
            if line.startswith(b"X-Bench-Id: "):
                found[line[12:].decode()] += 1
    wanted = Counter(accepted)
    missing = sum(1 for token in wanted if token not in found)
    duplicated = sum(1 for token, n in found.items() if n > 1)
    unexpected = sum(1 for token in found if token not in wanted)
    return missing, duplicated, unexpected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--size", type=int, default=8192, help="mean message size in bytes")
    parser.add_argument("--per-connection", type=int, default=1,
                        help="messages per SMTP session (1: a new connection for each)")
    parser.add_argument("--spool", type=Path, help="spool root (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary spool")
    args = parser.parse_args()

    root = args.spool or Path(tempfile.mkdtemp(prefix="scanmail-bench-"))
    spool = root / "spool"
    create_spool(spool)
    port = free_port()
    env = spool / "etc" / "scanmail.env"
    env.write_text(
        f"SPOOL_DIR={spool}\nLOCAL_DOMAINS=corp.example\nRELAY_NETWORKS=192.0.2.0/24\n"
        f"HOSTNAME=gw.bench.example\nLISTEN=127.0.0.1:{port}\n"
        f"MAX_CONNECTIONS={args.clients + 10}\nMAX_MESSAGE_SIZE=50M\n"
    )
    script = Path(sys.executable).parent / "scanmail-smtpd"
    daemon = subprocess.Popen([str(script), "--config", str(env)])
    tally = Tally()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit("scanmail-smtpd did not start") from None
                time.sleep(0.05)
        spread = sizes(args.size)
        plan = [(secrets.token_hex(8), next(spread)) for _ in range(args.messages)]
        total_bytes = sum(size for _, size in plan)
        started = time.perf_counter()
        deadline = time.monotonic() + RUN_LIMIT
        with ThreadPoolExecutor(args.clients) as pool:
            for _ in range(args.clients):
                pool.submit(client, port, plan, args.per_connection, tally, deadline)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(daemon.pid)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    missing, duplicated, unexpected = verify(spool / "incoming", tally.accepted)
    rate = len(tally.accepted) / elapsed
    print(f"scanmail-smtpd load: {args.messages} messages, {args.clients} clients, "
          f"{args.per_connection} per connection, mean {args.size} B "
          f"({total_bytes / 1e6:.1f} MB), {os.cpu_count()} CPUs")
    print(f"  accepted         {len(tally.accepted)} in {elapsed:.2f} s = {rate:.0f} messages/s "
          f"({rate * total_bytes / args.messages / 1e6:.1f} MB/s)")
    print(f"  server CPU       {cpu:.1f} s = {cpu / max(len(tally.accepted), 1) * 1000:.2f} ms "
          f"per message ({cpu / elapsed * 100:.0f}% of one CPU)")
    print(f"  refused          {dict(tally.refused) or 0}; client errors {dict(tally.errors) or 0}")
    print(f"  time to 250      p50 {percentile(tally.to_250, 0.5) * 1000:.1f} ms  "
          f"p99 {percentile(tally.to_250, 0.99) * 1000:.1f} ms  "
          f"max {max(tally.to_250, default=float('nan')) * 1000:.1f} ms  (final dot -> 250)")
    print(f"  transaction      p50 {percentile(tally.session, 0.5) * 1000:.1f} ms  "
          f"p99 {percentile(tally.session, 0.99) * 1000:.1f} ms  (MAIL FROM -> 250)")
    if tally.to_250:
        print(f"  mean time to 250 {statistics.fmean(tally.to_250) * 1000:.1f} ms")
    ok = bool(tally.accepted) and not (missing or duplicated or unexpected)
    print(f"  incoming check   {'OK' if ok else 'FAILED'}: every accepted message exactly once "
          f"(missing {missing}, duplicated {duplicated}, unexpected {unexpected})")
    if not args.spool and not args.keep:
        shutil.rmtree(root)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
