"""A loopback HTTP server publishing signature files, some of them deliberately broken."""

from __future__ import annotations

import hashlib
import http.server
import os
import pwd
import threading
from dataclasses import dataclass
from pathlib import Path

from helpers.smtp_sink import free_port
from scanmail.clamd_client import ClamdClient
from scanmail.testing import PrivateClamd


@dataclass
class Published:
    """One file on the server: its bytes and how it is served."""

    data: bytes
    mode: str = "ok"  # ok | truncate (Content-Length lies) | nolength | status code


class _Handler(http.server.BaseHTTPRequestHandler):
    server: SignatureServer

    def do_GET(self) -> None:
        item = self.server.files.get(self.path.lstrip("/"))
        if item is None:
            self.send_error(404)
            return
        if item.mode.isdigit():
            self.send_error(int(item.mode))
            return
        self.send_response(200)
        if item.mode == "truncate":
            # the whole size announced, half the bytes sent, then the connection drops
            self.send_header("Content-Length", str(len(item.data)))
            self.end_headers()
            self.wfile.write(item.data[: len(item.data) // 2])
            return
        if item.mode != "nolength":
            self.send_header("Content-Length", str(len(item.data)))
        self.end_headers()
        self.wfile.write(item.data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class SignatureServer(http.server.ThreadingHTTPServer):
    """HTTP on 127.0.0.1, a free port, in a daemon thread; stop() is bounded."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, Published] = {}
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"

    def publish(self, name: str, data: bytes, mode: str = "ok") -> str:
        self.files[name] = Published(data, mode)
        return self.url(name)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


def hash_line(data: bytes, name: str) -> str:
    """An .hdb line (md5:size:name) matching exactly these bytes."""
    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n"


def scan_bytes(clamd: PrivateClamd, data: bytes) -> str:
    """clamd's INSTREAM answer for data, e.g. 'stream: OK'."""
    return ClamdClient(str(clamd.socket), 10).scan_bytes(data).text


def freshclam_conf(path: Path, db_dir: Path, port: int, extra: str = "") -> Path:
    """A freshclam.conf in tmp: a loopback private mirror, no DNS, no clamd notification."""
    path.write_text(
        f"DatabaseDirectory {db_dir}\n"
        # as root freshclam would switch to the clamav user, who cannot write in tmp
        f"DatabaseOwner {pwd.getpwuid(os.getuid()).pw_name}\n"
        f"PrivateMirror http://127.0.0.1:{port}\n"
        "DNSDatabaseInfo no\n"
        "ScriptedUpdates no\n"
        "MaxAttempts 1\n"
        "ConnectTimeout 5\n"
        "ReceiveTimeout 5\n"
        "Foreground yes\n" + extra
    )
    return path
