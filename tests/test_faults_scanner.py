"""Issue 14, item 13: a clamd that answers VERSION but fails every scan is down.

A fake clamd on a Unix socket (the real one cannot be made to misbehave on purpose):
PING and VERSION answered, every INSTREAM answered with an error. Real `scanmail --once`
processes: the mail stays in incoming, one outage alert, nothing quarantined as unchecked.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from helpers.mail import enqueue, message
from scanmail.clamd_client import ClamdClient
from scanmail.spool import list_complete, read_spool_file
from scanmail.testing import eicar

START = "from scanmail.cli.scan import main; main()"


class FakeClamd:
    """Answers PING and VERSION; an ERROR for every scan."""

    def __init__(self, path: Path, finds_eicar: bool = False) -> None:
        self.path = path
        self.finds_eicar = finds_eicar  # then only the other scans fail: the message's fault
        self.scans = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self.server.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(10)
                self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        command = b""
        while not command.endswith((b"\n", b"\0")) and len(command) < 100:
            byte = conn.recv(1)
            if not byte:
                return
            command += byte
        name = command[1:-1]
        if name == b"PING":
            conn.sendall(b"PONG\n")
        elif name == b"VERSION":
            conn.sendall(b"ClamAV 1.0.7/27000/Tue Dec  1 00:00:00 2026\n")
        elif name == b"INSTREAM":
            self.scans += 1
            data = b""
            for _ in range(1 << 20):  # bounded: chunks until the zero-length one
                size = struct.unpack("!L", self.read(conn, 4))[0]
                if size == 0:
                    break
                data += self.read(conn, size)
            if self.finds_eicar and data == eicar():
                conn.sendall(b"stream: Eicar-Test-Signature FOUND\n")
            else:
                conn.sendall(b"stream: Can't allocate memory ERROR\n")

    @staticmethod
    def read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(min(size - len(data), 1 << 16))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def __enter__(self) -> FakeClamd:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.close()


@contextlib.contextmanager
def fake_clamd(tmp_path: Path, finds_eicar: bool = False) -> Iterator[FakeClamd]:
    with FakeClamd(tmp_path / "fake-clamd.sock", finds_eicar) as server:
        yield server


def alerts(root: Path) -> list[bytes]:
    """The admin alerts waiting in outgoing."""
    return [read_spool_file(p).read_message() for p in list_complete(root / "outgoing")
            if read_spool_file(p).envelope.sender == ""]


def test_a_clamd_failing_every_scan_leaves_mail_in_incoming_with_one_outage_alert(
    tmp_path, spool_root, write_env,
):
    with fake_clamd(tmp_path) as clamd:
        env = write_env(CLAMD_SOCKET=str(clamd.path))
        queued = [enqueue(spool_root, message(f"m{i}")) for i in range(2)]
        codes = []
        for _ in range(4):  # more passes than SCAN_FAILURES_MAX
            done = subprocess.run([sys.executable, "-c", START, "--config", str(env), "--once"],
                                  capture_output=True, text=True, timeout=300, check=False)
            codes.append(done.returncode)
        assert clamd.scans > 0
    assert all(path.is_file() for path in queued)  # still in incoming
    assert list_complete(spool_root / "quarantine") == []
    assert codes == [75] * 4, done.stderr
    [alert] = alerts(spool_root)
    assert b"virus scanner unavailable" in alert
    assert (spool_root / "var" / "scanner-down").is_file()


def test_a_clamd_that_passes_the_canary_blames_the_message_after_three_passes(
    tmp_path, spool_root, write_env,
):
    with fake_clamd(tmp_path, finds_eicar=True) as clamd:
        env = write_env(CLAMD_SOCKET=str(clamd.path))
        path = enqueue(spool_root, message("breaks the scanner"))
        for _ in range(3):
            subprocess.run([sys.executable, "-c", START, "--config", str(env), "--once"],
                           capture_output=True, timeout=300, check=False)
    assert not path.exists()
    [held] = list_complete(spool_root / "quarantine")
    record = (spool_root / "quarantine" / f"{held.name}.d" / "record").read_text()
    assert "Reason: unchecked" in record and "scanner failed 3 times" in record
    assert not (spool_root / "var" / "scanner-down").exists()


def test_a_clamd_that_takes_no_descriptors_is_streamed_to(tmp_path: Path) -> None:
    """FILDES unanswered (a clamd behind a forwarded socket, an old or odd one): the object
    is streamed instead, and so is every later one, with the same verdict."""
    sample = tmp_path / "sample.com"
    sample.write_bytes(eicar())
    with fake_clamd(tmp_path, finds_eicar=True) as server:
        client = ClamdClient(str(server.path), timeout=10)
        reply = client.scan_file(sample)
        assert reply.virus == "Eicar-Test-Signature" and reply.text.startswith("stream:")
        assert client.fildes is False and server.scans == 1
        assert client.scan_file(sample).virus == "Eicar-Test-Signature"
        assert server.scans == 2
