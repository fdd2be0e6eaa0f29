"""Scanner Protocol and ScanResult; the clamd backend and the command backend (exit codes)."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from scanmail.config import Config
from scanmail.errors import ScanFailed, ScannerUnavailable

with warnings.catch_warnings():
    # clamd 1.0.2 probes pkg_resources for its version at import; that warns on new setuptools.
    warnings.simplefilter("ignore")
    import clamd

CHUNK = 1 << 20  # INSTREAM chunk; clamd's default StreamMaxLength is far larger


class TooLarge(Exception):
    """The scanner refuses an object this large: the message cannot be checked."""


@dataclass(frozen=True)
class Target:
    """A byte range to scan: a file from an offset (the message inside a spool file)."""

    path: Path
    offset: int = 0


@dataclass(frozen=True)
class ScanResult:
    """The union of what the scanner said about every target."""

    viruses: tuple[str, ...] = ()

    @property
    def infected(self) -> bool:
        return bool(self.viruses)


class Scanner(Protocol):
    """A virus scanner: raw message plus decoded parts in, one result out."""

    def scan(self, message: Target, parts: Sequence[Path], workdir: Path) -> ScanResult:
        """Scan; raise ScannerUnavailable if no answer, TooLarge if it cannot be checked."""
        ...

    def version(self) -> str:
        """The scanner's version line; raise ScannerUnavailable if it does not answer."""
        ...


def _clamd_connection(address: str, timeout: float) -> Any:
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://") :].rpartition(":")
        return clamd.ClamdNetworkSocket(host.strip("[]"), int(port), timeout=timeout)
    return clamd.ClamdUnixSocket(address, timeout=timeout)


@contextlib.contextmanager
def _connected(address: str, timeout: float) -> Iterator[Any]:
    """A clamd connection, closed afterwards even when connect() fails (the package leaks it)."""
    conn = _clamd_connection(address, timeout)
    try:
        try:
            conn._init_socket()
        except (clamd.ClamdError, OSError) as exc:
            raise ScannerUnavailable(f"clamd at {address}: {exc}") from exc
        yield conn
    finally:
        sock = getattr(conn, "clamd_socket", None)
        if sock is not None:
            sock.close()


class ClamdScanner:
    """ClamAV's daemon over its socket, streaming bytes with INSTREAM.

    INSTREAM, not SCAN: clamd runs as its own user and need not be able to read the spool.
    The clamd package opens the socket and parses replies; the stream itself is sent here
    with sendall() in 1 MB chunks, because the package's own instream() uses send() with
    1 KB chunks, which can short-write on a busy socket and is slow for large parts.
    """

    def __init__(self, config: Config) -> None:
        self.address = config.clamd_socket
        self.timeout = config.clamd_timeout

    def version(self) -> str:
        try:
            with _connected(self.address, self.timeout) as conn:
                conn._send_command("VERSION")
                return str(conn._recv_response())
        except (clamd.ClamdError, OSError) as exc:
            raise ScannerUnavailable(f"clamd at {self.address}: {exc}") from exc

    def scan(self, message: Target, parts: Sequence[Path], workdir: Path) -> ScanResult:
        # The raw message first: ClamAV caches clean files by hash, so the decoded parts
        # that its own MIME parser already extracted and scanned come back from its cache.
        viruses: list[str] = []
        for target in (message, *(Target(path) for path in parts)):
            found = self.scan_target(target)
            if found and found not in viruses:
                viruses.append(found)
        return ScanResult(tuple(viruses))

    def scan_target(self, target: Target) -> str | None:
        """The virus name in one target, or None if clean."""
        try:
            with _connected(self.address, self.timeout) as conn:
                reply = _instream(conn, target)
        except (clamd.ClamdError, OSError) as exc:  # reached, then failed on this object
            raise ScanFailed(f"clamd at {self.address}: {target.path.name}: {exc}") from exc
        if reply.startswith("INSTREAM size limit exceeded"):
            raise TooLarge(f"clamd refused {target.path.name}: {reply} (raise StreamMaxLength)")
        try:
            _path, virus, status = conn._parse_response(reply)
        except clamd.ClamdError as exc:
            raise ScanFailed(f"clamd at {self.address}: {reply or exc}") from exc
        if status == "FOUND":
            return str(virus)
        if status == "OK":
            return None
        raise ScanFailed(f"clamd at {self.address}: {reply}")


def _instream(conn: Any, target: Target) -> str:
    """Send one object with INSTREAM and read clamd's reply.

    clamd closes the stream as soon as it passes StreamMaxLength; the reply saying so is
    then waiting to be read, and it must be, or an oversized message would be retried
    forever instead of being quarantined as unchecked.
    """
    conn._send_command("INSTREAM")
    try:
        with open(target.path, "rb") as handle:
            handle.seek(target.offset)
            while chunk := handle.read(CHUNK):
                conn.clamd_socket.sendall(struct.pack("!L", len(chunk)) + chunk)
        conn.clamd_socket.sendall(struct.pack("!L", 0))
    except (BrokenPipeError, ConnectionResetError):
        reply = str(conn._recv_response())
        if reply:
            return reply
        raise
    return str(conn._recv_response())


class CommandScanner:
    """Any command-line scanner judged by its exit status, as the seed used uvscan.

    The raw message is copied into the work folder beside the decoded parts and the
    command scans that folder once: one process per message, not one per part.
    """

    RAW_NAME = "raw-message.eml"  # safe_name() always starts with digits: no clash

    def __init__(self, config: Config) -> None:
        self.argv = config.scanner_command
        self.clean = config.scanner_clean_codes
        self.infected = config.scanner_infected_codes
        self.regex = config.scanner_virus_regex
        self.timeout = config.scanner_timeout

    def version(self) -> str:
        program = shutil.which(self.argv[0])
        if program is None:
            raise ScannerUnavailable(f"scanner command {self.argv[0]!r} not found")
        return program

    def command_for(self, path: Path) -> list[str]:
        """The argv with {} replaced by path (appended if there is no {}); never a shell."""
        if any("{}" in arg for arg in self.argv):
            return [arg.replace("{}", str(path)) for arg in self.argv]
        return [*self.argv, str(path)]

    def scan(self, message: Target, parts: Sequence[Path], workdir: Path) -> ScanResult:
        raw_copy = workdir / self.RAW_NAME
        with open(message.path, "rb") as src, _exclusive(raw_copy) as dst:
            src.seek(message.offset)
            shutil.copyfileobj(src, dst, CHUNK)
        try:
            done = subprocess.run(
                self.command_for(workdir),
                capture_output=True,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ScannerUnavailable(f"scanner command {self.argv[0]!r} not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise ScannerUnavailable(f"scanner command timed out after {self.timeout} s") from exc
        finally:
            raw_copy.unlink(missing_ok=True)
        output = (done.stdout + b"\n" + done.stderr).decode("utf-8", "replace")
        if done.returncode in self.clean:
            return ScanResult()
        if done.returncode in self.infected:
            names = [m.group(1) if m.groups() else m.group(0)
                     for m in self.regex.finditer(output)]
            unique = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
            return ScanResult(unique or ("unknown virus",))
        last = output.strip().splitlines()[-1:] or [""]
        raise ScannerUnavailable(
            f"scanner command exited {done.returncode}: {last[0][:200]}"
        )


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[BinaryIO]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        yield handle


def make_scanner(config: Config) -> Scanner:
    """The backend SCANNER names."""
    if config.scanner == "command":
        return CommandScanner(config)
    return ClamdScanner(config)
