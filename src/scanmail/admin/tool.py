"""The system tools `scanmail setup` runs (adduser, setfacl, systemctl): bounded, one line.

Each is run with an argument list (never a shell), no input, and a timeout; a failure
becomes a SetupError naming the command and the last line it wrote, which is what the
admin needs to see.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from scanmail.errors import SetupError

TIMEOUT = 120.0


def run_tool(argv: Sequence[str], missing: str = "", timeout: float = TIMEOUT) -> str:
    """Run argv; its standard output, or SetupError (missing: what to install if absent)."""
    command = shlex.join(argv)
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SetupError(f"{argv[0]} not found{': ' + missing if missing else ''}") from None
    except subprocess.TimeoutExpired:
        raise SetupError(f"{command}: no answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise SetupError(f"{command} failed (exit {done.returncode})"
                         f"{': ' + said[-1] if said else ''}")
    return done.stdout


def succeeds(argv: Sequence[str], timeout: float = TIMEOUT) -> bool:
    """Whether argv exits 0 (a question such as `systemctl is-active X`)."""
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
