"""Run a command with stdout on a real terminal (a pty), as by hand, or on a pipe, as cron does."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# The command line of each program, as its console script runs it.
COMMANDS = {"scanmail": "scan", "scanmail-fwd": "fwd", "sigupdate": "sigupdate"}


@dataclass(frozen=True)
class Ran:
    """How a command ended and what it wrote to stdout."""

    code: int
    stdout: str
    stderr: str


def run(command: str, *args: str, terminal: bool, timeout: float = 120) -> Ran:
    """Run command (scanmail, scanmail-fwd, sigupdate) with stdout on a pty (terminal) or a
    pipe; stdin is /dev/null."""
    start = f"from scanmail.cli.{COMMANDS[command]} import main; main()"
    argv = [sys.executable, "-c", start, *args]
    with tempfile.TemporaryFile() as errors:
        if not terminal:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=errors, timeout=timeout, check=False)
            errors.seek(0)
            return Ran(done.returncode, done.stdout.decode(), errors.read().decode())
        master, slave = pty.openpty()
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave,
                                       stderr=errors)
            os.close(slave)
            slave = -1
            out = bytearray()
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal's last writer
                    break
                if not chunk:
                    break
                out += chunk
            code = process.wait(timeout)
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)
        errors.seek(0)
        # The terminal's line discipline writes CRLF for LF (onlcr).
        return Ran(code, out.decode().replace("\r\n", "\n"), errors.read().decode())
