"""What the tests run as root share: an install every user can read, throwaway system users.

The test venv's interpreter may live where a service user cannot read (a pyenv under
/root): after a switch its lazy imports would fail, as they never would in a real install.
So commands that run as the service user come from a venv of Debian's python3 in a folder
every user can walk into, with this checkout pip-installed (not editable), as the README's
install does.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

SYSTEM_PYTHON = Path("/usr/bin/python3")
REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def walkable_folder(prefix: str) -> Iterator[Path]:
    """A fresh folder under /tmp, mode 0755 (tmp_path's parents are root's, 0700); removed after."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def install_venv(venv: Path) -> Path:
    """A venv of Debian's python3 at venv with this checkout installed; its bin folder."""
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(REPO)], check=True,
                   timeout=600, capture_output=True)
    return venv / "bin"


def throwaway_name() -> str:
    """A user name no real account has (smt + 8 hex digits)."""
    return f"smt{uuid.uuid4().hex[:8]}"


def remove_user(name: str) -> None:
    """userdel name, and its group if userdel left it (adduser --group made one)."""
    subprocess.run(["userdel", name], check=False, timeout=60, capture_output=True)
    subprocess.run(["groupdel", name], check=False, timeout=60, capture_output=True)
