"""The one clamd client: CLAMD_SOCKET parsed once into an address; commands, FILDES, INSTREAM.

It wraps the `clamd` package (its connection classes, command framing and reply parser);
every use of the package's private methods is here. What it adds: a bounded connect for
TCP too (the package connects before it sets the timeout), replies read with a size bound
(a misbehaving clamd cannot fill memory), and INSTREAM sent with sendall() in 1 MB chunks
(the package's own instream() uses send() with 1 KB chunks, which can short-write on a
busy socket and is slow for large parts).

Errors: no connection is ScannerUnavailable (the scanner is down); a failure after the
connection is ScanFailed for a scan (this object failed) and ScannerUnavailable for a
command.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanmail.errors import ScanFailed, ScannerUnavailable
from scanmail.pieces import Cuts, copy_pieces, pieces

with warnings.catch_warnings():
    # clamd 1.0.2 probes pkg_resources for its version at import; that warns on new setuptools.
    warnings.simplefilter("ignore")
    import clamd

CHUNK = 1 << 20  # INSTREAM chunk; clamd's default StreamMaxLength is far larger
MAX_REPLY = 1 << 16  # no clamd reply is longer
# Objects up to this size go to a local clamd as descriptors. Kept well under any sane
# MaxFileSize (Debian's is 25M): past StreamMaxLength INSTREAM is refused (unchecked), a
# descriptor past MaxFileSize would be skipped in silence.
FILDES_MAX = 10 << 20


@dataclass(frozen=True)
class ClamdAddress:
    """Where clamd listens: a Unix socket path, or a TCP host and port."""

    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> ClamdAddress:
        """'/run/clamav/clamd.ctl' or 'tcp://host:port' ('[::1]:3310' for IPv6)."""
        if text.startswith("tcp://"):
            host, _, port = text[len("tcp://") :].rpartition(":")
            return cls(host=host.strip("[]"), port=int(port))
        return cls(path=text)

    def __str__(self) -> str:
        if self.path:
            return self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True)
class ScanReply:
    """clamd's verdict on one stream."""

    status: str  # OK | FOUND | ERROR
    virus: str | None
    text: str  # the whole reply line

    @property
    def too_large(self) -> bool:
        return self.text.startswith("INSTREAM size limit exceeded")


class ClamdClient:
    """Commands and streams to one clamd, every wait bounded by timeout."""

    def __init__(self, address: ClamdAddress | str, timeout: float) -> None:
        self.address = address if isinstance(address, ClamdAddress) else ClamdAddress.parse(address)
        self.timeout = timeout
        self.fildes = True  # hand files over as descriptors (local socket, small objects)
        self.fildes_max = FILDES_MAX

    def command(self, name: str, timeout: float | None = None) -> str:
        """Send one command (VERSION, RELOAD, PING) and return clamd's reply line."""
        try:
            with self._connected(timeout) as conn:
                conn._send_command(name)
                return _reply(conn)
        except (clamd.ClamdError, OSError) as exc:
            raise ScannerUnavailable(f"clamd at {self.address}: {exc}") from exc

    def version(self) -> str:
        return self.command("VERSION")

    def scan_file(self, path: Path, offset: int = 0, cuts: Cuts = ()) -> ScanReply:
        """The file from offset, less the cuts (offsets from offset), scanned; clamd's reply.

        On a local socket an object up to FILDES_MAX is handed over as a descriptor
        (FILDES): clamd reads it in place, and neither side copies it through the
        socket. Larger ones (past fildes_max: see clamd_limits.handover_max) are streamed
        (INSTREAM), so that clamd's StreamMaxLength still refuses what it would not scan
        whole. A clamd that refuses descriptors is
        streamed to from then on.
        """
        if self.address.path and self.fildes:
            try:
                conn, text = self._scan(path, offset, cuts, handover=True)
            except ScanFailed:  # a clamd that drops the descriptor, or the connection
                text = ""
            if not _refused(text):
                return self._parsed(conn, text)
            conn, text = self._scan(path, offset, cuts, handover=False)
            if not _refused(text):
                self.fildes = False  # this clamd takes no descriptors: stream from now on
            return self._parsed(conn, text)
        return self._parsed(*self._scan(path, offset, cuts, handover=False))

    def _scan(self, path: Path, offset: int, cuts: Cuts, handover: bool) -> tuple[Any, str]:
        try:
            with self._connected() as conn:
                text = _fildes(conn, path, offset, cuts, self.fildes_max) if handover else None
                if text is None:
                    text = _instream(conn, path, offset, cuts)
        except (clamd.ClamdError, OSError) as exc:  # reached, then failed on this object
            raise ScanFailed(f"clamd at {self.address}: {path.name}: {exc}") from exc
        return conn, text

    def scan_bytes(self, data: bytes, timeout: float | None = None) -> ScanReply:
        """INSTREAM a small object held in memory (the canary, a test sample)."""
        try:
            with self._connected(timeout) as conn:
                conn._send_command("INSTREAM")
                conn.clamd_socket.sendall(struct.pack("!L", len(data)) + data
                                          + struct.pack("!L", 0))
                text = _reply(conn)
        except (clamd.ClamdError, OSError) as exc:
            raise ScanFailed(f"clamd at {self.address}: {exc}") from exc
        return self._parsed(conn, text)

    def _parsed(self, conn: Any, text: str) -> ScanReply:
        if text.startswith("INSTREAM size limit exceeded"):
            return ScanReply("ERROR", None, text)
        try:
            _path, virus, status = conn._parse_response(text)
        except clamd.ClamdError as exc:
            raise ScanFailed(f"clamd at {self.address}: {text or exc}") from exc
        if status not in ("OK", "FOUND"):
            raise ScanFailed(f"clamd at {self.address}: {text}")
        return ScanReply(str(status), str(virus) if status == "FOUND" else None, text)

    @contextlib.contextmanager
    def _connected(self, timeout: float | None = None) -> Iterator[Any]:
        """A connection of the package's, on a socket connected here with a timeout."""
        timeout = self.timeout if timeout is None else timeout
        address = self.address
        conn: Any
        try:
            if address.path:
                conn = clamd.ClamdUnixSocket(address.path, timeout=timeout)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(address.path)
                except OSError:
                    sock.close()
                    raise
            else:
                conn = clamd.ClamdNetworkSocket(address.host, address.port, timeout=timeout)
                sock = socket.create_connection((address.host, address.port), timeout=timeout)
        except OSError as exc:
            raise ScannerUnavailable(f"clamd at {address}: {exc.strerror or exc}") from exc
        conn.clamd_socket = sock
        try:
            yield conn
        finally:
            sock.close()


def _reply(conn: Any) -> str:
    """One reply line, read with a bound."""
    with contextlib.closing(conn.clamd_socket.makefile("rb")) as reader:
        line = reader.readline(MAX_REPLY)
    return bytes(line).rstrip(b"\0").decode("utf-8", "replace").strip()


def _refused(text: str) -> bool:
    """Not an answer about the object: an ERROR (other than the size limit, which is an
    answer: too large), an unknown command, or nothing at all."""
    if text.startswith("INSTREAM size limit exceeded"):
        return False
    return not text.endswith((" OK", " FOUND"))


def _fildes(conn: Any, path: Path, offset: int, cuts: Cuts, largest: int) -> str | None:
    """Hand clamd the file as a descriptor (FILDES); None, having sent nothing, if the
    object is over largest bytes. clamd scans a descriptor from its start: an object that
    starts at an offset (the message after a spool file's envelope) or has cuts is first
    copied by the kernel into an anonymous memory file (memfd), which clamd then reads."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        parts = pieces(offset, os.fstat(fd).st_size, cuts)
        if sum(length for _, length in parts) > largest:
            return None
        if offset or cuts:
            view = os.memfd_create("scanmail-message", os.MFD_CLOEXEC)
            try:
                copy_pieces(fd, view, parts)
            except BaseException:
                os.close(view)
                raise
            os.close(fd)
            fd = view
        conn._send_command("FILDES")
        conn.clamd_socket.sendmsg(
            [b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        return _reply(conn)
    finally:
        os.close(fd)


def _instream(conn: Any, path: Path, offset: int, cuts: Cuts = ()) -> str:
    """Send one object with INSTREAM and read clamd's reply.

    clamd closes the stream as soon as it passes StreamMaxLength; the reply saying so is
    then waiting to be read, and it must be, or an oversized message would be retried
    forever instead of being quarantined as unchecked.
    """
    conn._send_command("INSTREAM")
    try:
        with open(path, "rb") as handle:
            for start, length in pieces(offset, os.fstat(handle.fileno()).st_size, cuts):
                handle.seek(start)
                while length > 0 and (chunk := handle.read(min(CHUNK, length))):
                    length -= len(chunk)
                    conn.clamd_socket.sendall(struct.pack("!L", len(chunk)) + chunk)
        conn.clamd_socket.sendall(struct.pack("!L", 0))
    except (BrokenPipeError, ConnectionResetError):
        reply = _reply(conn)
        if reply:
            return reply
        raise
    return _reply(conn)
