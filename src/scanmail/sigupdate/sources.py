"""Extra signature files (SIG_SOURCES): fetch each one, validate it with ClamAV, install it."""

from __future__ import annotations

import email.utils
import filecmp
import http.client
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from scanmail.durable import fsync_dir
from scanmail.errors import ConfigError, ExitCode
from scanmail.sigupdate.canary import CANARY_FILE
from scanmail.sigupdate.database import SOURCE_EXTENSIONS, TOOL_TIMEOUT, extension
from scanmail.sigupdate.freshclam import first_error
from scanmail.sigupdate.steps import StepError

FETCH_TIMEOUT = 120.0  # whole download of one extra signature file
VALIDATE_TIMEOUT = TOOL_TIMEOUT  # clamscan loading one file
MAX_SOURCE_BYTES = 256 << 20
USER_AGENT = "scanmail-sigupdate/0.1"
FRESHCLAM_STEMS = frozenset({"main", "daily", "bytecode", "safebrowsing"})
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
TEMP, CONF, FAIL = ExitCode.TEMPFAIL, ExitCode.CONFIG, ExitCode.FAILURE


@dataclass(frozen=True)
class Installed:
    """One source handled: where it went, how many signatures, whether the file changed."""

    name: str
    signatures: int
    changed: bool

    def line(self) -> str:
        state = "installed" if self.changed else "unchanged"
        return f"{self.name}: {state} (signatures: {self.signatures})"


def target_name(url: str) -> str:
    """The file name a source is installed under; ConfigError unless ClamAV loads such files."""
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name)
    if not _SOURCE_NAME.fullmatch(name) or extension(name) not in SOURCE_EXTENSIONS:
        kinds = " .".join(sorted(SOURCE_EXTENSIONS))
        raise ConfigError(f"SIG_SOURCES: not a signature file name (one of .{kinds})")
    if name.split(".")[0].lower() in FRESHCLAM_STEMS or name == CANARY_FILE:
        raise ConfigError(f"SIG_SOURCES: {name} is maintained by freshclam or sigupdate")
    return name


def _copy(response: BinaryIO, out: BinaryIO, max_bytes: int, deadline: float) -> int:
    size = 0
    while chunk := response.read(1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise StepError(f"larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise StepError("download too slow", TEMP)
        try:
            out.write(chunk)
        except OSError as exc:
            raise StepError(f"cannot write the download: {exc.strerror}") from exc
    return size


def _last_modified(value: str | None) -> float | None:
    """A Last-Modified header as a time stamp, never in the future; None if absent or bad."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    stamp = when.replace(tzinfo=when.tzinfo or UTC).timestamp()
    return min(stamp, time.time())


def _fetch_error(url: str, exc: Exception) -> StepError:
    if isinstance(exc, urllib.error.HTTPError):
        temporary = exc.code >= 500 or exc.code in (408, 429)
        return StepError(f"HTTP {exc.code} {exc.reason}", TEMP if temporary else FAIL)
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    # a file:// source failing is local and will not mend itself; the network may
    return StepError(f"cannot fetch: {reason}", FAIL if url.startswith("file:") else TEMP)


def fetch(url: str, dest: Path, timeout: float = FETCH_TIMEOUT,
          max_bytes: int = MAX_SOURCE_BYTES) -> float | None:
    """Download url into dest, bounded in time and size; return its Last-Modified time."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    deadline = time.monotonic() + timeout
    with open(dest, "wb") as out:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                size = _copy(response, out, max_bytes, deadline)
                headers = response.headers
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise _fetch_error(url, exc) from exc
        out.flush()
        os.fsync(out.fileno())
    expected = headers.get("Content-Length")
    if expected is not None and expected.strip().isdigit() and int(expected) != size:
        raise StepError(f"truncated download: {size} of {int(expected)} bytes", TEMP)
    return _last_modified(headers.get("Last-Modified"))


def has_signatures(path: Path) -> bool:
    """True if the file has a line that is neither blank nor a comment."""
    with open(path, "rb") as handle:
        return any(line.strip() and not line.startswith(b"#") for line in handle)


def validate(path: Path, timeout: float = VALIDATE_TIMEOUT) -> int:
    """Load the file alone with clamscan; return its signature count or raise StepError."""
    if not has_signatures(path):
        raise StepError("refused: no signatures in it")
    empty = path.parent / "empty"
    empty.write_bytes(b"")
    try:
        done = subprocess.run(
            ["clamscan", f"--database={path}", str(empty)], stdin=subprocess.DEVNULL,
            capture_output=True, text=True, errors="replace", timeout=timeout, check=False,
        )
    except OSError as exc:
        raise StepError(f"cannot run clamscan to check it: {exc.strerror}", CONF) from exc
    except subprocess.TimeoutExpired as exc:
        raise StepError(f"refused: clamscan did not load it within {timeout:g} s") from exc
    if done.returncode != 0:
        cause = first_error(done.stderr + done.stdout) or f"clamscan exit {done.returncode}"
        raise StepError(f"refused, ClamAV cannot load it: {cause}")
    count = re.search(r"^Known viruses: (\d+)", done.stdout, re.MULTILINE)
    return int(count.group(1)) if count else 0


def install(new: Path, target: Path, mtime: float | None) -> bool:
    """Rename a checked file into place unless the same bytes are there; True if it changed."""
    if target.is_file() and filecmp.cmp(new, target, shallow=False):
        return False
    os.chmod(new, 0o644)  # clamd runs as its own user and must read it
    if mtime is not None:
        os.utime(new, (mtime, mtime))  # the file's age is the publisher's, for staleness
    os.replace(new, target)
    fsync_dir(target.parent)
    return True


def update_source(db_dir: Path, url: str, name: str) -> Installed:
    """Fetch one source into a scratch folder, validate it, install it atomically."""
    try:
        # In db_dir so the final rename stays on one file system; ClamAV does not read
        # subfolders, so the half-fetched file is never loaded.
        with tempfile.TemporaryDirectory(dir=db_dir, prefix=".sigupdate-") as work:
            new = Path(work) / name
            mtime = fetch(url, new)
            count = validate(new)
            return Installed(name, count, install(new, db_dir / name, mtime))
    except OSError as exc:
        raise StepError(f"{db_dir}: {exc.strerror or exc}") from exc
