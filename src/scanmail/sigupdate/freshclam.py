"""freshclam: running it once, bounded, and what its exit statuses mean."""

from __future__ import annotations

import re
import subprocess

from scanmail.errors import ExitCode
from scanmail.sigupdate.steps import StepError

FRESHCLAM_TIMEOUT = 1800.0  # a first download of main.cvd on a slow line takes minutes

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
