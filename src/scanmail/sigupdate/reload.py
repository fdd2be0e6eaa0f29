"""Talking to clamd over CLAMD_SOCKET: VERSION, RELOAD, the canary scan; every wait bounded."""

from __future__ import annotations

import re
import socket
import struct
import time

from scanmail.config import Config
from scanmail.errors import ScannerUnavailable
from scanmail.sigupdate.canary import CANARY_FILE, Canary, read_canary, write_canary
from scanmail.sigupdate.steps import StepError

CHECK_CLAMD_TIMEOUT = 5.0


def _connect(address: str, timeout: float) -> socket.socket:
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://") :].rpartition(":")
        return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def _receive(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    data = b""
    while len(data) < limit and not data.endswith(b"\0"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def clamd_command(address: str, command: str, timeout: float, payload: bytes | None = None) -> str:
    """Send one command to clamd (INSTREAM when a payload is given); return its reply."""
    try:
        with _connect(address, timeout) as sock:
            sock.sendall(b"z" + command.encode("ascii") + b"\0")
            if payload is not None:
                size = struct.pack("!L", len(payload))
                sock.sendall(size + payload + struct.pack("!L", 0))
            reply = _receive(sock)
    except OSError as exc:
        raise ScannerUnavailable(f"clamd at {address}: {exc.strerror or exc}") from exc
    return reply.rstrip(b"\0").decode("utf-8", "replace").strip()


def has_loaded(address: str, canary: Canary, timeout: float) -> bool:
    """True if clamd detects the canary, i.e. runs the database it was written into."""
    reply = clamd_command(address, "INSTREAM", timeout, canary.sample)
    return re.fullmatch(rf"stream: {re.escape(canary.name)}(\.\w+)? FOUND", reply) is not None


def reload_clamd(address: str, canary: Canary, timeout: float) -> float:
    """RELOAD, then poll (bounded) until clamd detects the canary; return the seconds taken."""
    start = time.monotonic()
    reply = clamd_command(address, "RELOAD", timeout)
    if reply != "RELOADING":
        raise StepError(f"clamd answered RELOAD with {reply!r}")
    delay = 0.01
    while (left := timeout - (time.monotonic() - start)) > 0:
        if has_loaded(address, canary, max(left, 1.0)):
            return time.monotonic() - start
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise StepError(
        f"clamd did not load the new database within {timeout:g} s"
        " (is SIG_DB_DIR clamd's DatabaseDirectory? see clamd's log)"
    )


def sync_clamd(config: Config, changed: bool) -> str:
    """Make clamd run the database now in SIG_DB_DIR, reloading only if it does not."""
    address, timeout, db_dir = config.clamd_socket, config.clamd_timeout, config.sig_db_dir
    canary = read_canary(db_dir)
    if not changed and canary is not None and has_loaded(address, canary, timeout):
        return f"clamd: already runs this database ({clamd_command(address, 'VERSION', timeout)})"
    try:
        canary = write_canary(db_dir)
    except OSError as exc:
        raise StepError(f"{db_dir}: cannot write {CANARY_FILE}: {exc.strerror}") from exc
    seconds = reload_clamd(address, canary, timeout)
    version = clamd_command(address, "VERSION", timeout)
    return f"clamd: reloaded, confirmed after {seconds:.2f} s ({version})"


def clamd_state(config: Config) -> str:
    """clamd's VERSION and whether it runs the database in SIG_DB_DIR, for --check."""
    timeout = min(config.clamd_timeout, CHECK_CLAMD_TIMEOUT)
    try:
        version = clamd_command(config.clamd_socket, "VERSION", timeout)
        canary = read_canary(config.sig_db_dir)
        if canary is None:
            return f"clamd: {version}"
        loaded = has_loaded(config.clamd_socket, canary, timeout)
    except ScannerUnavailable as exc:
        return f"clamd: unreachable ({exc})"
    state = "runs" if loaded else "does NOT run"
    return f"clamd: {version}, {state} the database last installed by sigupdate"
