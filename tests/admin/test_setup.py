"""`scanmail setup` for real, as root: a throwaway service user, a tmp spool and unit folder,
a copy of Debian's clamd.conf; then mail through the gateway it installed.

Nothing is mocked: setup runs from a venv every user can read (helpers.rootrun), creates
the user with adduser, writes the files; the receiver is started as its unit says, as the
service user, and a message sent to it on 127.0.0.1 reaches a loopback sink.
"""

from __future__ import annotations

import os
import pwd
import shutil
import smtplib
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.mail import message
from helpers.rootrun import remove_user, throwaway_name, walkable_folder
from helpers.smtp_sink import Sink, free_port, wait_for_port
from scanmail.admin.envfile import values
from scanmail.admin.units import command_line, service_section, shipped
from scanmail.clamd_limits import parse_directives, read_limits
from scanmail.testing import PrivateClamd

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("adduser") is None or shutil.which("setfacl") is None,
    reason="needs root, adduser and setfacl: creates a real service user",
)

DEBIAN_CONF = Path(__file__).resolve().parents[1] / "data" / "clamd.conf.debian12"
MB = 1 << 20


@dataclass
class Site:
    """One throwaway install: where everything goes, and the answers that say so."""

    bin_dir: Path
    base: Path
    user: str

    @property
    def spool(self) -> Path:
        return self.base / "spool"

    @property
    def units(self) -> Path:
        return self.base / "units"

    @property
    def env(self) -> Path:
        return self.spool / "etc" / "scanmail.env"

    def setup(self, *answers: str, clamd_conf: Path | None = None
              ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "scanmail"), "setup", "--user", self.user,
                "--spool", str(self.spool), "--unit-dir", str(self.units),
                "--clamd-conf", str(clamd_conf or self.base / "clamd.conf"),
                "--sig-db-dir", str(self.base / "sigs"), "--no-start", *answers]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                              env={"PATH": os.environ["PATH"]})


@pytest.fixture
def site(installed_bin: Path) -> Iterator[Site]:
    with walkable_folder("scanmail-setup-") as base:
        shutil.copy(DEBIAN_CONF, base / "clamd.conf")
        with (base / "clamd.conf").open("a") as conf:
            conf.write("StreamMaxLength 100M\n")  # appended, as the README once said: ignored
        (base / "sigs").mkdir()
        name = throwaway_name()
        try:
            yield Site(installed_bin, base, name)
        finally:
            remove_user(name)


FIRST = ("--hostname", "gw.corp.example", "--relay-host", "mail.corp.example")


def state(folder: Path) -> dict[str, tuple[int, int, int, int, bytes]]:
    """Everything under folder: owner, mode, and a file's mtime and content.

    Not scanmail.env.example's mtime: init rewrites that one every time (it is ours, kept
    current), and so its folder's.
    """
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        is_file = stat.S_ISREG(info.st_mode)
        when = info.st_mtime_ns if is_file and path.name != "scanmail.env.example" else 0
        data = path.read_bytes() if is_file else b""
        found[str(path)] = (info.st_uid, info.st_gid, info.st_mode, when, data)
    return found


def test_setup_installs_every_part_and_a_second_run_changes_nothing(site: Site) -> None:
    original = (site.base / "clamd.conf").read_text()
    first = site.setup(*FIRST)
    assert first.returncode == 0, first.stderr
    said = first.stdout
    assert f"created the system user {site.user}" in said
    assert f"created the spool {site.spool}" in said
    assert f"wrote {site.env} (SPOOL_DIR, " in said
    assert "StreamMaxLength 25M -> 64M (line 79)" in said and "clamd must be restarted" in said
    assert "systemd is not running" in said or "not started (--no-start)" in said

    user = pwd.getpwnam(site.user)
    assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin"
    for folder in [site.spool, *site.spool.iterdir()]:
        info = folder.lstat()
        if stat.S_ISDIR(info.st_mode):
            assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
                user.pw_uid, user.pw_gid, 0o700), folder

    env = site.env.lstat()
    assert (env.st_uid, stat.S_IMODE(env.st_mode)) == (user.pw_uid, 0o600)
    settings = values(site.env.read_text())
    assert {key: settings.get(key) for key in (
        "SPOOL_DIR", "HOSTNAME", "LOCAL_DOMAINS", "RELAY_HOST", "RELAY_PORT", "ADMIN_EMAIL",
        "LISTEN")} == {
        "SPOOL_DIR": str(site.spool), "HOSTNAME": "gw.corp.example",
        "LOCAL_DOMAINS": "corp.example", "RELAY_HOST": "mail.corp.example", "RELAY_PORT": "25",
        "ADMIN_EMAIL": "postmaster@corp.example", "LISTEN": "[::]:25"}

    conf = site.base / "clamd.conf"
    edited = conf.read_text()
    limits = read_limits(conf)
    assert {name: (limit.value, limit.line) for name, limit in limits.items()} == {
        "StreamMaxLength": (64 * MB, 79), "MaxFileSize": (64 * MB, 68),
        "MaxScanSize": (256 * MB, 67)}
    assert parse_directives(edited)["AlertExceedsMax"][0] == "yes"
    assert edited.count("\nStreamMaxLength ") == original.count("\nStreamMaxLength ") == 2
    assert edited.endswith("StreamMaxLength 100M\nAlertExceedsMax yes\n")  # nothing else added
    assert (site.base / "clamd.conf.scanmail-bak").read_text() == original

    assert sorted(path.name for path in site.units.iterdir()) == sorted(shipped())
    for path in site.units.glob("*.service"):
        text = path.read_text()
        assert "/usr/local/bin" not in text and "/var/spool/smtpd" not in text
        service = service_section(text)
        argv, environment = command_line(text)
        assert argv[0].startswith(f"{site.bin_dir}/") and os.access(argv[0], os.X_OK)
        assert environment == {"SPOOL_DIR": str(site.spool)}
        assert service["User"] == [site.user] and service["Group"] == [site.user]
        assert str(site.spool) in service["ReadWritePaths"]
    acl = subprocess.run(["getfacl", "--omit-header", "--absolute-names", str(site.base / "sigs")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert f"user:{site.user}:rwx" in acl.split()

    before = state(site.base)
    second = site.setup(*FIRST)
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    assert f"user {site.user}: already there" in second.stdout
    assert f"{site.env}: already as asked" in second.stdout
    assert "limits already fit" in second.stdout and "already as they should be" in second.stdout
    assert state(site.base) == before


def test_a_setting_given_later_replaces_its_line(site: Site) -> None:
    assert site.setup(*FIRST).returncode == 0
    with site.env.open("a") as env:  # the admin's own edits since
        env.write("# our own limit\nMAX_HOPS=20\n")
    kept = site.env.read_text()
    later = site.setup("--relay-host", "127.0.0.1:2600", "--admin-email", "ops@corp.example")
    assert later.returncode == 0, later.stderr
    assert f"{site.env}: kept your edits; set RELAY_HOST, RELAY_PORT, ADMIN_EMAIL" in later.stdout
    lines = site.env.read_text().splitlines()
    assert [line for line in lines if line.startswith("RELAY_")] == [
        "RELAY_HOST=127.0.0.1", "RELAY_PORT=2600"]
    assert [line for line in lines if line.startswith("ADMIN_EMAIL")] == [
        "ADMIN_EMAIL=ops@corp.example"]
    changed = {"RELAY_HOST", "RELAY_PORT", "ADMIN_EMAIL"}
    assert [line for line in lines if line.split("=")[0] not in changed] == [
        line for line in kept.splitlines() if line.split("=")[0] not in changed]
    info = site.env.lstat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (pwd.getpwnam(site.user).pw_uid, 0o600)


def test_a_link_planted_in_the_spool_gives_root_s_rights_to_nobody(site: Site) -> None:
    assert site.setup(*FIRST).returncode == 0
    user = pwd.getpwnam(site.user)
    victim = site.base / "victim"
    victim.write_text("root's own\n")
    victim.chmod(0o600)
    for name in ("scanmail.env", ".scanmail.env.partial"):
        (site.spool / "etc" / name).unlink(missing_ok=True)
        (site.spool / "etc" / name).symlink_to(victim)
        os.lchown(site.spool / "etc" / name, user.pw_uid, user.pw_gid)
    refused = site.setup("--relay-host", "other.corp.example")
    assert refused.returncode == 73
    assert refused.stderr.splitlines()[-1] == (
        f"scanmail: {site.env} is a symbolic link: put the file itself there")
    (site.spool / "etc" / "scanmail.env").unlink()  # the partial link is still there
    again = site.setup(*FIRST)
    assert again.returncode == 0, again.stderr
    assert victim.read_text() == "root's own\n" and victim.stat().st_uid == 0
    assert site.env.lstat().st_uid == user.pw_uid and not site.env.is_symlink()


def test_bad_answers_and_a_non_root_run_are_one_line_each(site: Site) -> None:
    for answers, said in [
        (("--user", "Not A User"), "--user 'Not A User': not a user name"),
        (("--relay-host", "mail example"), "--relay-host 'mail example': not HOST[:PORT]"),
        (("--user", site.user), "--relay-host HOST[:PORT] is needed"),
    ]:
        argv = [str(site.bin_dir / "scanmail"), "setup", "--spool", str(site.spool),
                "--unit-dir", str(site.units), "--no-start", *answers]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 78, (answers, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith(f"scanmail: {said}"), line
    assert not site.env.exists()
    nobody = subprocess.run(
        ["runuser", "-u", "nobody", "--", str(site.bin_dir / "scanmail"), "setup",
         "--relay-host", "mail.corp.example"],
        capture_output=True, text=True, timeout=120, check=False, cwd="/")
    assert nobody.returncode == 73, nobody.stderr
    assert nobody.stderr.strip().splitlines()[-1] == (
        "scanmail: scanmail setup must be run as root: it creates the service user, the "
        "spool and the systemd units")


@pytest.fixture
def debian_clamd(site: Site, clamd_db: Path) -> PrivateClamd:
    """A private clamd whose conf has Debian's limits, for setup to raise before it starts."""
    server = PrivateClamd(site.base / "clamd", db_dir=clamd_db)
    server.configure()
    text = server.conf.read_text()
    for name, debian in (("StreamMaxLength", "25M"), ("MaxFileSize", "25M"),
                         ("MaxScanSize", "100M")):
        text = "\n".join(f"{name} {debian}" if line.startswith(f"{name} ") else line
                         for line in text.splitlines()) + "\n"
    server.conf.write_text(text + "LocalSocketMode 666\n")
    return server


def test_mail_goes_through_the_installed_gateway(site: Site, debian_clamd: PrivateClamd) -> None:
    listen = free_port()
    with Sink() as sink:
        done = site.setup(*FIRST[:2], "--relay-host", f"127.0.0.1:{sink.port}",
                          "--local-domains", "corp.example", "--listen", f"127.0.0.1:{listen}",
                          "--clamd-socket", str(debian_clamd.socket),
                          clamd_conf=debian_clamd.conf)
        assert done.returncode == 0, done.stderr
        assert read_limits(debian_clamd.conf)["StreamMaxLength"].value == 64 * MB
        debian_clamd.start()  # clamd takes the file setup edited
        try:
            receiver = start_as_unit(site.units / "scanmail-smtpd.service", site.base)
            try:
                wait_for_port(listen, timeout=30)
                with smtplib.SMTP("127.0.0.1", listen, timeout=30) as client:
                    client.sendmail("alice@out.example", ["bob@corp.example"],
                                    message("through the installed gateway"))
                env = {"PATH": os.environ["PATH"], "SPOOL_DIR": str(site.spool)}
                for command in (["scanmail", "--once"], ["scanmail-fwd", "--once"]):
                    ran = subprocess.run([str(site.bin_dir / command[0]), *command[1:]],
                                         env=env, capture_output=True, text=True,
                                         timeout=120, check=False)
                    assert ran.returncode == 0, (command, ran.stderr)
            finally:
                receiver.terminate()
                receiver.wait(timeout=20)
        finally:
            debian_clamd.stop()
        [arrived] = sink.messages
    assert arrived.recipients == ["bob@corp.example"]
    assert b"Subject: through the installed gateway" in arrived.content
    assert b"X-Virus-Scanned: ClamAV using scanmail" in arrived.content
    assert not [path for path in site.spool.rglob("*") if path.lstat().st_uid == 0]


def start_as_unit(unit: Path, logs: Path) -> subprocess.Popen[bytes]:
    """The service as systemd would start it: its ExecStart, User, Group and Environment."""
    argv, environment = command_line(unit.read_text())
    service = service_section(unit.read_text())
    user = pwd.getpwnam(service["User"][-1])
    with (logs / f"{unit.stem}.log").open("wb") as log:
        return subprocess.Popen(
            argv, user=user.pw_uid, group=service["Group"][-1],
            extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
            env={"PATH": "/usr/bin:/bin", **environment}, cwd="/",
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
