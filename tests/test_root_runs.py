"""Root runs act as the spool's owner: a real service user, real commands run as root.

No root-owned file may appear in a spool owned by the service user, and nothing the
service user planted (a link to a root-owned file) is followed, chowned or truncated.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.mail import message
from helpers.smtp_sink import Sink
from scanmail.spool import Envelope, Spool
from scanmail.testing import PrivateClamd, eicar

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="needs root and useradd: creates a real service user",
)


_BIN: list[Path] = []


@pytest.fixture(autouse=True)
def _use_installed(installed_bin: Path) -> Iterator[None]:
    _BIN.append(installed_bin)
    yield
    _BIN.clear()


def command(name: str, *args: str) -> list[str]:
    return [str(_BIN[-1] / name), *args]


@pytest.fixture
def service_user() -> Iterator[pwd.struct_passwd]:
    name = f"smt{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                    "--shell", "/usr/sbin/nologin", name], check=True, timeout=60)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, timeout=60)


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder the service user can walk into (tmp_path's parents are root's, 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="scanmail-root-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def clamd(base: Path, clamd_db: Path) -> Iterator[PrivateClamd]:
    server = PrivateClamd(base / "clamd", db_dir=clamd_db)
    server.base.mkdir()
    server.configure()
    with server.conf.open("a") as conf:
        conf.write("LocalSocketMode 666\n")
    server.start()
    yield server
    server.stop()


def run(env: dict[str, str], name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(name, *args), env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def root_owned(spool: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(spool):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            if path.lstat().st_uid == 0:
                found.append(str(path.relative_to(spool)))
    return found


def make_spool(base: Path, user: pwd.struct_passwd, **settings: str) -> tuple[Path, dict[str, str]]:
    spool = base / "spool"
    env = {"PATH": os.environ["PATH"], "SPOOL_DIR": str(spool)}
    created = run(env, "scanmail", "init", "--user", user.pw_name)
    assert created.returncode == 0, created.stderr
    values = {"SPOOL_DIR": str(spool), "ADMIN_EMAIL": "admin@corp.example",
              "HOSTNAME": "gw.corp.example", **settings}
    (spool / "etc" / "scanmail.env").write_text(
        "".join(f"{key}='{value}'\n" for key, value in values.items()))
    again = run(env, "scanmail", "init", "--user", user.pw_name)  # the upgrade step, as root
    assert again.returncode == 0, again.stderr
    assert root_owned(spool) == []
    return spool, env


def as_user(user: pwd.struct_passwd, path: Path) -> Path:
    """What the service user would have made itself (we are root: hand it over)."""
    os.lchown(path, user.pw_uid, user.pw_gid)
    return path


def test_commands_run_by_root_leave_no_root_owned_file(
    base: Path, service_user: pwd.struct_passwd, clamd: PrivateClamd
) -> None:
    with Sink() as sink:
        spool, env = make_spool(base, service_user, CLAMD_SOCKET=str(clamd.socket),
                                RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port))
        writer = Spool(spool)
        for data in (message("clean"), message("bad", attachments=[("report.txt", eicar())])):
            as_user(service_user, writer.write("incoming", Envelope("a@out.example",
                                                                    ("bob@corp.example",)),
                                               [data]))
        results = [
            run(env, "scanmail", "--once"),
            run(env, "scanmail", "quarantine", "list"),
            run(env, "scanmail", "status"),
            run(env, "daysumm", "--print"),
            run(env, "scanmail-fwd", "--once"),
            run(env, "sigupdate", "--check"),
        ]
        for result in results:
            assert result.returncode != 70, result.stderr  # never "a bug"
        assert results[0].returncode == 0, results[0].stderr
        assert "infected" in results[1].stdout
        assert sink.messages, "the clean message and the alert reach the relay"
    assert list((spool / "quarantine").iterdir())
    assert root_owned(spool) == []


def test_planted_links_are_not_followed(
    base: Path, service_user: pwd.struct_passwd, clamd: PrivateClamd
) -> None:
    spool, env = make_spool(base, service_user, CLAMD_SOCKET=str(clamd.socket))
    victim = base / "victim"
    victim.write_text("root's secret\n")
    victim.chmod(0o600)
    before = victim.stat()
    for name in ("var/scanmail.lock", "var/fwd.lock", "var/events.sqlite-wal",
                 "etc/matches.doc", "etc/.matches.bad.partial"):
        target = spool / name
        target.unlink(missing_ok=True)
        target.symlink_to(victim)
        as_user(service_user, target)
    example = spool / "etc" / "scanmail.env.example"  # refreshed by every init
    example.unlink()
    example.symlink_to(victim)
    as_user(service_user, example)
    for args in (("scanmail", "init", "--user", service_user.pw_name),
                 ("scanmail", "--once"), ("scanmail-fwd", "--once"),
                 ("scanmail", "quarantine", "purge")):
        result = run(env, *args)
        assert result.returncode != 70, (args, result.stderr)
    after = victim.stat()
    assert victim.read_text() == "root's secret\n"
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (0, 0, 0o600)
    assert after.st_mtime_ns == before.st_mtime_ns


def test_init_refuses_a_linked_folder(base: Path, service_user: pwd.struct_passwd) -> None:
    spool, env = make_spool(base, service_user)
    private = base / "private"
    private.mkdir(mode=0o700)
    shutil.rmtree(spool / "bin")
    (spool / "bin").symlink_to(private)
    result = run(env, "scanmail", "init", "--user", service_user.pw_name)
    assert result.returncode not in (0, 70)
    assert "bin: not a folder" in result.stderr
    info = private.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o700)


def test_forwarder_skips_a_file_it_cannot_read(
    base: Path, service_user: pwd.struct_passwd
) -> None:
    with Sink() as sink:
        spool, env = make_spool(base, service_user, RELAY_HOST="127.0.0.1",
                                RELAY_PORT=str(sink.port))
        left = Spool(spool).write("outgoing", Envelope("a@out.example", ("bob@corp.example",)),
                                  [message("left by root")])  # root's file, 0750 root:root
        result = run(env, "scanmail-fwd", "--once")
        assert result.returncode != 70, result.stderr
        assert "permission denied" in result.stderr
        assert left.exists()  # kept for the admin to chown
        subjects = [m.content for m in sink.messages]
        assert any(b"unreadable spool file" in content for content in subjects)
