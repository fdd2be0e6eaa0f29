"""The installed gateway exercised once, for scripts/ci-install-check: one message through it.

Run by the installed venv's python after scripts/install (so aiosmtpd and scanmail are
the installed ones): a private clamd from the clamd.conf setup edited, a loopback sink
standing in for the internal server, scanmail-smtpd started as its unit says (ExecStart,
User, Group, Environment: there is no systemd in CI), one message sent to it, then
`scanmail --once` and `scanmail-fwd --once` as root, as cron would; the message must
reach the sink. Everything it starts is stopped; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from scanmail.admin.units import command_line, service_section
from scanmail.clamd_limits import read_limits

DEADLINE = 60.0


class Recorder:
    """The sink's handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 2.0.0 OK"


class Check:
    """The steps, each said in one line, all within DEADLINE seconds."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work)
        self.started = time.monotonic()
        self.processes: list[subprocess.Popen[bytes]] = []

    def left(self) -> float:
        remaining = DEADLINE - (time.monotonic() - self.started)
        if remaining <= 0:
            raise SystemExit(f"check: FAILED: over {DEADLINE:.0f} s")
        return remaining

    def say(self, text: str) -> None:
        print(f"check: {text} ({time.monotonic() - self.started:.1f} s)", flush=True)

    def wait_until(self, ready: Any) -> None:
        while not ready():
            self.left()
            time.sleep(0.05)

    def start(self, argv: list[str], log: str, **options: Any) -> subprocess.Popen[bytes]:
        with (self.work / log).open("wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, **options)
        self.processes.append(process)
        return process

    def clamd(self) -> None:
        conf = self.work / "clamd.conf"
        limit = read_limits(conf)["StreamMaxLength"]
        clamd = shutil.which("clamd") or "/usr/sbin/clamd"
        process = self.start([clamd, "-c", str(conf)], "clamd.log")
        self.wait_until(lambda: process.poll() is not None or pings(
            self.work / "clamd.sock"))
        if process.poll() is not None:
            raise SystemExit(f"check: FAILED: clamd exited {process.returncode}; "
                             f"see {self.work / 'clamd.log'}")
        self.say(f"clamd: private, on {self.work / 'clamd.sock'}, with the conf setup edited "
                 f"(StreamMaxLength {limit.value >> 20}M on line {limit.line})")

    def receiver(self) -> Path:
        unit = Path(self.args.units) / "scanmail-smtpd.service"
        text = unit.read_text()
        argv, environment = command_line(text)
        service = service_section(text)
        user = pwd.getpwnam(service["User"][-1])
        process = self.start(argv, "scanmail-smtpd.log", user=user.pw_uid,
                             group=service["Group"][-1], cwd="/",
                             extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
                             env={"PATH": "/usr/bin:/bin", **environment})
        port = self.args.listen_port
        self.wait_until(lambda: process.poll() is not None or accepts(port))
        if process.poll() is not None:
            raise SystemExit(f"check: FAILED: scanmail-smtpd exited {process.returncode}; "
                             f"see {self.work / 'scanmail-smtpd.log'}")
        self.say(f"scanmail-smtpd: started as {unit} says (User={user.pw_name}, pid "
                 f"{process.pid}), listening on 127.0.0.1:{port}")
        return Path(argv[0]).parent

    def send(self) -> str:
        mark = f"ci-install-check {uuid.uuid4().hex}"
        message = EmailMessage()
        message["From"] = "alice@out.example"
        message["To"] = "bob@ci.example"
        message["Subject"] = mark
        message.set_content("One clean message through the gateway scripts/install set up.\n")
        with smtplib.SMTP("127.0.0.1", self.args.listen_port, timeout=self.left()) as client:
            client.send_message(message)
        self.say(f"sent {mark!r} to bob@ci.example over SMTP: 250")
        return mark

    def run(self, bin_dir: Path, *argv: str, ok: tuple[int, ...] = (0,)) -> None:
        """A command as root, as cron would run it (it becomes the spool's owner)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SPOOL_DIR": self.args.spool}
        done = subprocess.run([str(bin_dir / argv[0]), *argv[1:]], env=env, timeout=self.left(),
                              capture_output=True, text=True, check=False)
        if done.returncode not in ok:
            raise SystemExit(f"check: FAILED: {' '.join(argv)} exited {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()}")
        attention = [line for line in done.stdout.splitlines() if line.startswith("!")]
        self.say(f"{' '.join(argv)}: exit {done.returncode}"
                 + "".join(f"; {line}" for line in attention))

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=20)


def pings(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.sendall(b"zPING\0")
            return sock.recv(16).startswith(b"PONG")
    except OSError:
        return False


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--units", default="/etc/systemd/system")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--sink-port", type=int, required=True)
    args = parser.parse_args()
    check = Check(args)
    recorder = Recorder()
    sink = Controller(recorder, hostname="127.0.0.1", port=args.sink_port, ready_timeout=10)
    try:
        check.clamd()
        sink.start()
        check.say(f"sink: the internal server stand-in on 127.0.0.1:{args.sink_port}")
        bin_dir = check.receiver()
        mark = check.send()
        check.run(bin_dir, "scanmail", "--once")
        check.run(bin_dir, "scanmail-fwd", "--once")
        with recorder.lock:
            arrived = [(rcpts, data) for rcpts, data in recorder.messages
                       if f"Subject: {mark}".encode() in data]
        if not arrived:
            print(f"check: FAILED: {mark!r} did not reach the sink "
                  f"({len(recorder.messages)} other messages did)", flush=True)
            return 1
        [(rcpts, data)] = arrived
        scanned = b"X-Virus-Scanned:" in data
        check.say(f"arrived at the sink for {', '.join(rcpts)}"
                  f"{', with X-Virus-Scanned' if scanned else ''}")
        # 1 is "needs attention": CI never ran freshclam, so SIG_DB_DIR tells no signature age
        check.run(bin_dir, "scanmail", "status", ok=(0, 1))
        return 0 if scanned else 1
    finally:
        check.stop()
        sink.stop(no_assert=True)
        check.say("stopped clamd, scanmail-smtpd and the sink")


if __name__ == "__main__":
    sys.exit(main())
