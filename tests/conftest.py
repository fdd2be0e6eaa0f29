"""Shared fixtures: a real clamd on a private socket, spools under tmp_path, .env files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.rootrun import SYSTEM_PYTHON, install_venv, walkable_folder
from scanmail.admin.init import create_spool
from scanmail.testing import PrivateClamd


@pytest.fixture(scope="session")
def clamd_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test signature database: sigtool --md5 of clamav-testfiles, plus EICAR."""
    from scanmail.testing import build_database

    db = tmp_path_factory.mktemp("clamdb")
    build_database(db)
    return db


def _running_clamd(base: Path, db: Path) -> Iterator[PrivateClamd]:
    server = PrivateClamd(base, db_dir=db)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clamd_server(
    tmp_path_factory: pytest.TempPathFactory, clamd_db: Path
) -> Iterator[PrivateClamd]:
    """One real clamd for the whole session, on a Unix socket in a private folder."""
    yield from _running_clamd(tmp_path_factory.mktemp("clamd"), clamd_db)


@pytest.fixture
def private_clamd(
    tmp_path_factory: pytest.TempPathFactory, clamd_db: Path
) -> Iterator[PrivateClamd]:
    """A clamd of the test's own, free to be stopped and restarted."""
    yield from _running_clamd(tmp_path_factory.mktemp("clamd-own"), clamd_db)


@pytest.fixture(scope="session")
def installed_bin() -> Iterator[Path]:
    """scanmail installed as the README says, in a venv every user can read: its bin folder.

    One for the session: the root-only tests (a service user runs these commands) share it.
    """
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"{SYSTEM_PYTHON} missing: the Debian python3 package")
    with walkable_folder("scanmail-venv-") as folder:
        yield install_venv(folder / "venv")


@pytest.fixture
def spool_root(tmp_path: Path) -> Path:
    """A fresh spool hierarchy with the default etc files."""
    root = tmp_path / "spool"
    create_spool(root)
    return root


EnvWriter = Callable[..., Path]


@pytest.fixture
def write_env(spool_root: Path, clamd_server: PrivateClamd) -> EnvWriter:
    """Write SPOOL/etc/scanmail.env with test settings; keyword arguments add or override."""

    def write(**settings: str) -> Path:
        values = {
            "SPOOL_DIR": str(spool_root),
            "CLAMD_SOCKET": str(clamd_server.socket),
            "ADMIN_EMAIL": "admin@corp.example",
            "HOSTNAME": "gw.corp.example",
            # Not the default 25 that LISTEN=[::]:25 also has: that is a loop and
            # `scanmail check`/`status` warn about it (issue 12, tests/test_relay_safety.py).
            "RELAY_PORT": "2526",
            # Most tests have no internal server to probe; tests/test_recipients.py turns
            # the default (probe when LOCAL_DOMAINS is set) back on.
            "RECIPIENT_VERIFY": "no",
        }
        values.update(settings)
        path = spool_root / "etc" / "scanmail.env"
        path.write_text("".join(f"{key}='{value}'\n" for key, value in values.items()))
        return path

    return write
