"""Signatures: run freshclam, fetch extra signature files, reload clamd, watch their age.

The seed fetched its scanner's data files weekly by FTP and trusted the result. Here each
step is checked: freshclam's exit status is read, every extra file must load in ClamAV
before it replaces anything, a reload counts only once clamd detects a canary signature
written with it, and the age of the newest signatures is compared with SIG_MAX_AGE_DAYS.
"""

from __future__ import annotations

import email.utils
import filecmp
import hashlib
import http.client
import logging
import os
import re
import secrets
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from scanmail.config import Config
from scanmail.errors import ConfigError, ExitCode, GatewayError, ScannerUnavailable
from scanmail.events import Event, EventLog
from scanmail.notify import alert_admin
from scanmail.spool import Spool, fsync_dir, run_lock

log = logging.getLogger(__name__)

LOCK_NAME = "sigupdate.lock"
FRESHCLAM_TIMEOUT = 1800.0  # a first download of main.cvd on a slow line takes minutes
FETCH_TIMEOUT = 120.0  # whole download of one extra signature file
VALIDATE_TIMEOUT = 300.0  # clamscan loading one file (large .ldb/.yara sets take a while)
MAX_SOURCE_BYTES = 256 << 20
STREAK_LOOKBACK = 8 * 86400.0  # covers a weekly cron: the seed's schedule
CHECK_CLAMD_TIMEOUT = 5.0
USER_AGENT = "scanmail-sigupdate/0.1"
OFFICIAL_EXTENSIONS = frozenset({"cvd", "cld", "cud"})
# Text formats ClamAV loads from a database directory and that third parties publish
# (signed .cvd/.cld and bytecode .cbc are freshclam's business).
SOURCE_EXTENSIONS = frozenset({
    "hdb", "hdu", "hsb", "hsu", "mdb", "mdu", "msb", "msu", "imp", "ndb", "ndu", "ldb",
    "ldu", "cdb", "idb", "ftm", "fp", "sfp", "ign", "ign2", "pdb", "gdb", "wdb", "yar", "yara",
})
DATABASE_EXTENSIONS = SOURCE_EXTENSIONS | OFFICIAL_EXTENSIONS | {"cbc", "crb", "cat", "pwdb"}
FRESHCLAM_STEMS = frozenset({"main", "daily", "bytecode", "safebrowsing"})
CANARY_FILE = "scanmail-canary.hsb"
CANARY_PREFIX = "Scanmail.Canary."
UPDATE_VERDICTS = frozenset({"updated", "current", "failed"})
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

OK, TEMP, CONF, FAIL = ExitCode.OK, ExitCode.TEMPFAIL, ExitCode.CONFIG, ExitCode.FAILURE

# ClamAV 1.x freshclam exits with libfreshclam's fc_error_t values (libfreshclam.h), while
# its man page still lists the 0.x codes 40-62: with 1.4.6 an unreachable mirror gives 11
# and an unparsable config file 2. The two ranges do not overlap, so both are read.
FRESHCLAM_EXITS: dict[int, tuple[str, ExitCode]] = {
    0: ("database up to date or updated", OK),
    1: ("FC_UPTODATE: database up to date", OK),
    2: ("FC_EINIT: cannot start (config file, options or log file)", CONF),
    3: ("FC_EDIRECTORY: database directory missing or inaccessible", CONF),
    4: ("FC_EFILE: file missing or inaccessible", FAIL),
    5: ("FC_ECONNECTION: connection failed", TEMP),
    6: ("FC_EEMPTYFILE: empty file downloaded", TEMP),
    7: ("FC_EBADCVD: invalid or corrupted CVD/CLD database", FAIL),
    8: ("FC_ETESTFAIL: the new database failed its load test", FAIL),
    9: ("FC_ECONFIG: invalid configuration setting", CONF),
    10: ("FC_EDBDIRACCESS: cannot read or write the database directory", FAIL),
    11: ("FC_EFAILEDGET: HTTP GET failed", TEMP),
    12: ("FC_EMIRRORNOTSYNC: mirror not synchronized", TEMP),
    13: ("FC_ELOGGING: cannot write its log", CONF),
    14: ("FC_EFAILEDUPDATE: database update failed", FAIL),
    15: ("FC_EMEM: out of memory", FAIL),
    16: ("FC_EARG: invalid argument", CONF),
    17: ("FC_EFORBIDDEN: blocked by the mirror (HTTP 403)", FAIL),
    18: ("FC_ERETRYLATER: rate limited, retry later (HTTP 429)", TEMP),
    19: ("FC_ERROR: unspecified error", FAIL),
    40: ("unknown option", CONF),
    50: ("cannot change directory", CONF),
    51: ("cannot check MD5 sum", FAIL),
    52: ("connection (network) problem", TEMP),
    53: ("cannot unlink file", FAIL),
    54: ("MD5 or digital signature verification error", FAIL),
    55: ("error reading file", FAIL),
    56: ("config file error", CONF),
    57: ("cannot create new file", FAIL),
    58: ("cannot read database from remote server", TEMP),
    59: ("mirrors not fully synchronized", TEMP),
    60: ("cannot get information about its user", CONF),
    61: ("cannot drop privileges", CONF),
    62: ("cannot initialize logger", CONF),
}


class StepError(GatewayError):
    """One step of a signature update failed; exit_code says how (temporary, config, other)."""

    def __init__(self, text: str, exit_code: ExitCode = FAIL, detail: str = "") -> None:
        super().__init__(text)
        self.exit_code = exit_code
        self.detail = detail


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a run: a stable key for alert streaks, how bad, and why."""

    key: str
    exit_code: ExitCode
    text: str
    detail: str = ""


@dataclass(frozen=True)
class Report:
    """What one run found: a verdict, one line per step, and the problems."""

    verdict: str  # updated | current | failed (update); fresh | stale (check); busy
    lines: tuple[str, ...]
    problems: tuple[Problem, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        """Worst first: config (an admin must act), other failure, temporary."""
        codes = {problem.exit_code for problem in self.problems}
        for code in (CONF, FAIL, TEMP):
            if code in codes:
                return code
        return OK

    def summary(self) -> str:
        return "; ".join(self.lines)

    def event(self) -> Event:
        keys = " ".join(problem.key for problem in self.problems)
        return Event(kind="sigupdate", verdict=self.verdict, reason=keys, detail=self.summary())


# freshclam


def freshclam_meaning(returncode: int) -> tuple[str, ExitCode]:
    """The name of a freshclam exit status and how bad it is."""
    if returncode < 0:
        return f"killed by signal {-returncode}", FAIL
    return FRESHCLAM_EXITS.get(returncode, ("unknown exit status", FAIL))


def first_error(output: str) -> str:
    """The first ERROR line of ClamAV tool output (the cause; later ones repeat it)."""
    for line in output.splitlines():
        found = re.search(r"(?:ERROR|LibClamAV Error):\s*(.+)", line)
        if found:
            return re.sub(r"\s+", " ", found.group(1)).strip()
    return ""


def run_freshclam(argv: tuple[str, ...], timeout: float) -> str:
    """Run freshclam once (bounded); return its outcome line or raise StepError."""
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", timeout=timeout, check=False,
        )
    except OSError as exc:
        raise StepError(f"FRESHCLAM_COMMAND: cannot run {argv[0]}: {exc.strerror}", CONF) from exc
    except subprocess.TimeoutExpired as exc:
        raise StepError(f"freshclam did not finish within {timeout:g} s", TEMP) from exc
    return judge_freshclam(done.returncode, done.stdout)


def judge_freshclam(returncode: int, output: str) -> str:
    """Turn freshclam's exit status and output into an outcome line, or raise StepError."""
    name, code = freshclam_meaning(returncode)
    if code is OK:
        cooldown = re.search(r"cool-down until after: ([^\n]+)", output)
        note = f" (but on cool-down until {cooldown.group(1).strip()})" if cooldown else ""
        return f"freshclam: {name}{note}"
    cause = first_error(output)
    text = f"freshclam failed with exit status {returncode}, {name}"
    tail = "\n".join(output.strip().splitlines()[-20:])
    raise StepError(text + (f": {cause}" if cause else ""), code, detail=tail)


# clamd control: a few commands over CLAMD_SOCKET, every wait bounded


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


# the canary: proof of which database clamd has loaded


@dataclass(frozen=True)
class Canary:
    """A signature of our own, rewritten at each reload; clamd detecting it proves the reload.

    With only hand-made databases VERSION shows no database version at all, and a .cvd's
    date does not change when an extra file does, so VERSION alone cannot confirm a reload.
    """

    tag: str

    @property
    def sample(self) -> bytes:
        return f"scanmail sigupdate canary {self.tag}\n".encode("ascii")

    @property
    def name(self) -> str:
        return CANARY_PREFIX + self.tag

    def line(self) -> str:
        digest = hashlib.sha256(self.sample).hexdigest()
        return f"{digest}:{len(self.sample)}:{self.name}\n"


def read_canary(db_dir: Path) -> Canary | None:
    """The canary now in the database directory, if there is a well-formed one."""
    try:
        text = (db_dir / CANARY_FILE).read_text("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(re.escape(CANARY_PREFIX) + r"([0-9a-f]{16})$", text.strip())
    canary = Canary(match.group(1)) if match else None
    return canary if canary is not None and canary.line() == text else None


def write_canary(db_dir: Path) -> Canary:
    """Put a new canary into the database directory, atomically."""
    canary = Canary(secrets.token_hex(8))
    write_atomically(db_dir / CANARY_FILE, canary.line().encode("ascii"))
    return canary


def write_atomically(target: Path, data: bytes) -> None:
    """Write a small file under a name ClamAV ignores, fsync it, rename it into place."""
    partial = target.with_name(f".{target.name}.partial")
    with open(partial, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(partial, 0o644)  # clamd runs as its own user
    os.replace(partial, target)
    fsync_dir(target.parent)


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


# extra signature files (SIG_SOURCES)


@dataclass(frozen=True)
class Installed:
    """One source handled: where it went, how many signatures, whether the file changed."""

    name: str
    signatures: int
    changed: bool

    def line(self) -> str:
        state = "installed" if self.changed else "unchanged"
        return f"{self.name}: {state} (signatures: {self.signatures})"


def extension(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""


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


# staleness


@dataclass(frozen=True)
class FileAge:
    """One database file and when its signatures were made."""

    name: str
    made: float
    origin: str  # "build time" (sigtool --info of a .cvd/.cld) or "file time" (mtime)
    version: str = ""

    def line(self, now: float) -> str:
        when = datetime.fromtimestamp(self.made, UTC).strftime("%Y-%m-%d %H:%M UTC")
        version = f" version {self.version}," if self.version else ""
        return f"{self.name}:{version} {self.origin} {when}, {days(now - self.made)} old"


def days(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days"


def database_files(db_dir: Path) -> list[Path]:
    """The files clamd loads from the directory, without our canary."""
    try:
        entries = sorted(db_dir.iterdir())
    except OSError:
        return []
    return [
        path for path in entries
        if extension(path.name) in DATABASE_EXTENSIONS and not path.name.startswith(".")
        and path.name != CANARY_FILE and path.is_file()
    ]


def snapshot(db_dir: Path) -> frozenset[tuple[str, int, int]]:
    """Name, size and mtime of every database file: a change means clamd needs a reload."""
    found = set()
    for path in database_files(db_dir):
        try:
            st = path.stat()
        except OSError:
            continue
        found.add((path.name, st.st_size, st.st_mtime_ns))
    return frozenset(found)


def build_time(path: Path) -> FileAge | None:
    """A .cvd/.cld's build time and version from `sigtool --info`; None if it has none."""
    try:
        done = subprocess.run(
            ["sigtool", f"--info={path}"], stdin=subprocess.DEVNULL, capture_output=True,
            text=True, errors="replace", timeout=VALIDATE_TIMEOUT, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    built = re.search(r"^Build time: (.+)$", done.stdout, re.MULTILINE)
    version = re.search(r"^Version: (\S+)", done.stdout, re.MULTILINE)
    try:
        made = datetime.strptime(built.group(1).strip(), "%d %b %Y %H:%M %z") if built else None
    except ValueError:
        made = None
    if made is None:
        log.warning("%s: sigtool --info shows no build time", path)
        return None
    return FileAge(path.name, made.timestamp(), "build time", version.group(1) if version else "")


def file_ages(db_dir: Path) -> list[FileAge]:
    """Official databases by build time; without any, hand-made files by modification time."""
    files = database_files(db_dir)
    official = [path for path in files if extension(path.name) in OFFICIAL_EXTENSIONS]
    if official:
        return [age for path in official if (age := build_time(path)) is not None]
    return [FileAge(path.name, path.stat().st_mtime, "file time") for path in files]


@dataclass(frozen=True)
class Freshness:
    """The age of the newest signatures against SIG_MAX_AGE_DAYS."""

    directory: Path
    files: tuple[FileAge, ...]
    limit_days: float
    now: float = field(default_factory=time.time)

    @property
    def newest(self) -> FileAge | None:
        return max(self.files, key=lambda age: age.made, default=None)

    @property
    def is_stale(self) -> bool:
        newest = self.newest
        return newest is None or self.now - newest.made > self.limit_days * 86400

    def summary(self) -> str:
        newest = self.newest
        if newest is None:
            return f"no dated signature database in {self.directory}"
        state = "stale" if self.is_stale else "fresh"
        return (
            f"signatures {state}: newest {days(self.now - newest.made)} old"
            f" ({newest.origin} of {newest.name}), limit {self.limit_days:g} days"
        )


def freshness(config: Config) -> Freshness:
    """How old the signatures in SIG_DB_DIR are."""
    db_dir = config.sig_db_dir
    return Freshness(db_dir, tuple(file_ages(db_dir)), config.sig_max_age_days)


# runs


class _Steps:
    """Collects each step's line, or its problem; one failing step never stops the next."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.problems: list[Problem] = []

    def attempt(self, key: str, step: Callable[[], str], prefix: str = "") -> None:
        try:
            self.lines.append(prefix + step())
        except GatewayError as exc:
            problem = Problem(key, exc.exit_code, prefix + str(exc), getattr(exc, "detail", ""))
            self.problems.append(problem)
            self.lines.append(problem.text)


def _sources(config: Config, steps: _Steps) -> None:
    seen: set[str] = set()
    for url in config.sig_sources:
        def step(url: str = url) -> str:
            name = target_name(url)
            if name in seen:
                raise ConfigError(f"SIG_SOURCES: a second source named {name}")
            seen.add(name)
            return update_source(config.sig_db_dir, url, name).line()

        steps.attempt(f"source:{url}", step, prefix=f"{url}: ")


def _missing(db_dir: Path) -> str:
    raise StepError(f"SIG_DB_DIR {db_dir} is not a directory", CONF)


def _update(config: Config, freshclam_timeout: float) -> Report:
    steps = _Steps()
    db_dir = config.sig_db_dir
    before = snapshot(db_dir)
    if config.freshclam_command:
        argv = config.freshclam_command
        steps.attempt("freshclam", lambda: run_freshclam(argv, freshclam_timeout))
    if not db_dir.is_dir():
        steps.attempt("database", lambda: _missing(db_dir))
    else:
        _sources(config, steps)
        if config.scanner == "clamd":  # the command scanner reads the files at each scan
            new = snapshot(db_dir) != before
            steps.attempt("reload", lambda: sync_clamd(config, new))
    fresh = freshness(config)
    if fresh.is_stale:
        steps.problems.append(Problem("stale", FAIL, fresh.summary()))
    steps.lines.append(fresh.summary())
    changed = snapshot(db_dir) != before
    verdict = "failed" if steps.problems else ("updated" if changed else "current")
    return Report(verdict, tuple(steps.lines), tuple(steps.problems))


def _previous_problems(events: EventLog) -> frozenset[str]:
    """The problem keys of the last update run, if it failed (check runs do not count)."""
    last = None
    for event in events.query(since=time.time() - STREAK_LOOKBACK, kinds=("sigupdate",)):
        if event.verdict in UPDATE_VERDICTS:
            last = event
    if last is None or last.verdict != "failed":
        return frozenset()
    return frozenset(last.reason.split())


def _subject(problems: Iterable[Problem]) -> str:
    """Problem keys for a subject line, the sources counted rather than listed."""
    keys = [problem.key for problem in problems]
    sources = sum(key.startswith("source:") for key in keys)
    named = [key for key in keys if not key.startswith("source:")]
    if sources:
        named.insert(1 if "freshclam" in named else 0, f"{sources} source(s)")
    return ", ".join(named)


def _alert_text(report: Report) -> str:
    texts = [problem.text for problem in report.problems]
    parts = [f"- {text}" for text in texts]
    others = [line for line in report.lines if line not in texts]
    if others:
        parts += ["", "The rest of this run:", *(f"  {line}" for line in others)]
    for problem in report.problems:
        if problem.detail:
            parts += ["", f"Output ({problem.key}):", problem.detail]
    parts += ["", "This alert is sent once per failing streak, and a notice when it ends;",
              "every run is an event (kind sigupdate). `sigupdate --check` shows the ages."]
    return "\n".join(parts) + "\n"


def _alert(config: Config, report: Report, previous: frozenset[str]) -> None:
    """Alert once per failing streak: when a problem appears, and once when all clear."""
    spool = Spool(config.spool_dir)
    new = [problem for problem in report.problems if problem.key not in previous]
    for problem in new:
        log.warning("%s", problem.text)
    if new:
        subject = f"signature update failing: {_subject(report.problems)}"
        alert_admin(config, spool, subject, _alert_text(report))
    elif previous and not report.problems:
        log.info("all clear again after: %s", ", ".join(sorted(previous)))
        text = "All clear: " + report.summary() + "\n"
        alert_admin(config, spool, "signature updates working again", text)


def update(config: Config, freshclam_timeout: float = FRESHCLAM_TIMEOUT) -> Report:
    """One sigupdate run: freshclam, extra sources, clamd reload, age check; event and alert."""
    with run_lock(config.var_dir / LOCK_NAME) as held:
        if not held:
            report = Report("busy", ("another sigupdate is running; nothing done",))
            with EventLog(config.var_dir) as events:
                events.record(report.event())
            return report
        report = _update(config, freshclam_timeout)
        with EventLog(config.var_dir) as events:
            previous = _previous_problems(events)
            events.record(report.event())
            _alert(config, report, previous)
    return report


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


def check(config: Config) -> Report:
    """Report versions and ages only (for monitoring); stale is a problem, nothing alerts."""
    fresh = freshness(config)
    lines = [fresh.summary(), *(age.line(fresh.now) for age in fresh.files)]
    if config.scanner == "clamd":
        lines.append(clamd_state(config))
    problems = (Problem("stale", FAIL, fresh.summary()),) if fresh.is_stale else ()
    report = Report("stale" if fresh.is_stale else "fresh", tuple(lines), problems)
    with EventLog(config.var_dir) as events:
        events.record(report.event())
    return report

