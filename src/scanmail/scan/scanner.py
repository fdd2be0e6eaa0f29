"""Scanner Protocol and ScanResult; the clamd backend and the command backend (exit codes)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from scanmail.clamd_client import FILDES_MAX, ClamdClient
from scanmail.clamd_limits import handover_max
from scanmail.config import Config
from scanmail.errors import ScannerUnavailable
from scanmail.humanize import size
from scanmail.pieces import copy_pieces, pieces


class TooLarge(Exception):
    """The scanner refuses an object this large: the message cannot be checked."""


@dataclass(frozen=True)
class Target:
    """What to scan: a file from an offset (the message inside a spool file), less the
    cuts (offsets from there): the stretches that decoded parts scanned beside it hold
    exactly (mime.Explosion.cuts)."""

    path: Path
    offset: int = 0
    cuts: tuple[tuple[int, int], ...] = ()


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


class ClamdScanner:
    """ClamAV's daemon over its socket: each object handed over or streamed.

    FILDES (a descriptor) or INSTREAM, never SCAN: clamd runs as its own user and need not
    be able to read the spool.
    """

    def __init__(self, config: Config) -> None:
        self.client = ClamdClient(config.clamd_socket, config.clamd_timeout)
        self.client.fildes_max = handover_max(config, FILDES_MAX)
        self.address = self.client.address

    def version(self) -> str:
        return self.client.version()

    def scan(self, message: Target, parts: Sequence[Path], workdir: Path) -> ScanResult:
        # The raw message first: ClamAV caches clean files by hash, so the decoded parts
        # that its own MIME parser extracts and scans come back from its cache. The
        # bodies cut out of it are decoded parts here: clamd neither decodes them again
        # nor matches its signatures against their base64 text.
        viruses: list[str] = []
        for target in (message, *(Target(path) for path in parts)):
            found = self.scan_target(target)
            if found and found not in viruses:
                viruses.append(found)
        return ScanResult(tuple(viruses))

    def scan_target(self, target: Target) -> str | None:
        """The virus name in one target, or None if clean."""
        reply = self.client.scan_file(target.path, target.offset, target.cuts)
        if reply.too_large:
            try:
                length = size(target.path.stat().st_size - target.offset)
            except OSError:
                length = "?"
            raise TooLarge(
                f"clamd refused {target.path.name} ({length}): {reply.text}: larger than "
                "clamd's StreamMaxLength (edit that line in clamd.conf; see scanmail status)"
            )
        return reply.virus


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
            end = os.fstat(src.fileno()).st_size
            copy_pieces(src.fileno(), dst.fileno(), pieces(message.offset, end, message.cuts))
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
