"""A private clamd with a test signature database, for the demo, the tests and the benchmarks.

The database is made at run time with `sigtool --md5` from Debian's clamav-testfiles and
the EICAR test string, so nothing infectious is stored in the repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

TESTFILES = Path("/usr/share/clamav-testfiles")
EICAR_NAME = "Eicar-Test-Signature"


def eicar() -> bytes:
    """The EICAR test string, built here so no scanner flags this source file."""
    parts = [r"X5O!P%@AP[4\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"]
    return "".join(parts).encode("ascii")


def sample_files() -> list[Path]:
    """Every file of the clamav-testfiles package."""
    if not TESTFILES.is_dir():
        raise FileNotFoundError(f"{TESTFILES} missing: apt-get install clamav-testfiles")
    return sorted(path for path in TESTFILES.iterdir() if path.is_file())


def build_database(db_dir: Path) -> Path:
    """Write test.hdb: sigtool --md5 of every test file, plus the EICAR string's hash."""
    db_dir.mkdir(parents=True, exist_ok=True)
    files = sample_files()
    listing = subprocess.run(
        ["sigtool", "--md5", *map(str, files)], check=True, capture_output=True, text=True
    ).stdout
    data = eicar()
    lines = [line for line in listing.splitlines() if line.strip()]
    lines.append(f"{hashlib.md5(data).hexdigest()}:{len(data)}:{EICAR_NAME}")
    path = db_dir / "test.hdb"
    path.write_text("\n".join(lines) + "\n")
    return path


def find_clamd() -> str:
    for candidate in ("clamd", "/usr/sbin/clamd"):
        found = shutil.which(candidate)
        if found:
            return found
    raise FileNotFoundError("clamd not found: apt-get install clamav-daemon")


class PrivateClamd:
    """clamd on a Unix socket in a folder of its own; start() and stop() may be repeated."""

    def __init__(self, base: Path, db_dir: Path | None = None) -> None:
        self.base = base
        self.db_dir = db_dir or base / "db"
        self.socket = base / "clamd.sock"
        self.conf = base / "clamd.conf"
        self.log = base / "clamd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def configure(self) -> None:
        (self.base / "tmp").mkdir(parents=True, exist_ok=True)
        if not any(self.db_dir.glob("*.hdb")):
            build_database(self.db_dir)
        self.conf.write_text(
            "\n".join(
                [
                    f"LocalSocket {self.socket}",
                    f"DatabaseDirectory {self.db_dir}",
                    f"TemporaryDirectory {self.base / 'tmp'}",
                    f"LogFile {self.log}",
                    f"PidFile {self.base / 'clamd.pid'}",
                    "Foreground yes",
                    "StreamMaxLength 300M",
                    "MaxFileSize 300M",
                    "MaxScanSize 600M",
                    "MaxThreads 8",
                    "ReadTimeout 300",
                    "SelfCheck 3600",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start clamd and wait (bounded) until it answers PING."""
        if not self.conf.exists():
            self.configure()
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [find_clamd(), "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"clamd exited with {self.process.returncode}: see {self.log}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clamd did not answer within {timeout} s: see {self.log}")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"zPING\0")
                return sock.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop clamd (SIGTERM, then SIGKILL after a bounded wait)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        self.process = None
        self.socket.unlink(missing_ok=True)

    def __enter__(self) -> PrivateClamd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """`python -m scanmail.testing DIR`: run a private clamd in DIR until interrupted."""
    import sys

    base = Path(sys.argv[1] if len(sys.argv) > 1 else "clamd-test").resolve()
    base.mkdir(parents=True, exist_ok=True)
    clamd = PrivateClamd(base)
    clamd.start()
    print(f"clamd ready: CLAMD_SOCKET={clamd.socket}", flush=True)
    try:
        assert clamd.process is not None
        clamd.process.wait()
    except KeyboardInterrupt:
        clamd.stop()


if __name__ == "__main__":
    main()
