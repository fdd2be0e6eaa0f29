"""sigupdate's side of clamd: RELOAD, confirmed by the canary scan; clamd's state for --check."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from scanmail.clamd_client import ClamdClient
from scanmail.config import Config
from scanmail.errors import ScanFailed, ScannerUnavailable
from scanmail.sigupdate.canary import CANARY_FILE, Canary, read_canary, write_canary
from scanmail.sigupdate.steps import StepError

CHECK_CLAMD_TIMEOUT = 5.0


def has_loaded(client: ClamdClient, canary: Canary, timeout: float) -> bool:
    """True if clamd detects the canary, i.e. runs the database it was written into."""
    try:
        reply = client.scan_bytes(canary.sample, timeout)
    except ScanFailed as exc:  # clamd answers, but not to a scan: it cannot confirm
        raise ScannerUnavailable(str(exc)) from exc
    return re.fullmatch(rf"{re.escape(canary.name)}(\.\w+)?", reply.virus or "") is not None


def reload_clamd(client: ClamdClient, canary: Canary, timeout: float) -> float:
    """RELOAD, then poll (bounded) until clamd detects the canary; return the seconds taken."""
    start = time.monotonic()
    reply = client.command("RELOAD", timeout)
    if reply != "RELOADING":
        raise StepError(f"clamd answered RELOAD with {reply!r}")
    delay = 0.01
    while (left := timeout - (time.monotonic() - start)) > 0:
        if has_loaded(client, canary, max(left, 1.0)):
            return time.monotonic() - start
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise StepError(
        f"clamd did not load the new database within {timeout:g} s"
        " (is SIG_DB_DIR clamd's DatabaseDirectory? see clamd's log)"
    )


@dataclass(frozen=True)
class Synced:
    """What sync_clamd did: reloaded clamd, or found it running the database already."""

    reloaded: bool
    line: str


def sync_clamd(config: Config, changed: bool) -> Synced:
    """Make clamd run the database now in SIG_DB_DIR, reloading only if it does not."""
    client = ClamdClient(config.clamd_socket, config.clamd_timeout)
    timeout, db_dir = config.clamd_timeout, config.sig_db_dir
    canary = read_canary(db_dir)
    if not changed and canary is not None and has_loaded(client, canary, timeout):
        version = client.command("VERSION", timeout)
        return Synced(False, f"clamd: already runs this database ({version})")
    try:
        canary = write_canary(db_dir)
    except OSError as exc:
        raise StepError(f"{db_dir}: cannot write {CANARY_FILE}: {exc.strerror}") from exc
    seconds = reload_clamd(client, canary, timeout)
    version = client.command("VERSION", timeout)
    return Synced(True, f"clamd: reloaded, confirmed after {seconds:.2f} s ({version})")


def clamd_state(config: Config) -> str:
    """clamd's VERSION and whether it runs the database in SIG_DB_DIR, for --check."""
    timeout = min(config.clamd_timeout, CHECK_CLAMD_TIMEOUT)
    try:
        client = ClamdClient(config.clamd_socket, timeout)
        version = client.command("VERSION")
        canary = read_canary(config.sig_db_dir)
        if canary is None:
            return f"clamd: {version}"
        loaded = has_loaded(client, canary, timeout)
    except ScannerUnavailable as exc:
        return f"clamd: unreachable ({exc})"
    state = "runs" if loaded else "does NOT run"
    return f"clamd: {version}, {state} the database last installed by sigupdate"
