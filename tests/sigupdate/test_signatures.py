"""sigupdate with real parts: clamd on a private socket, loopback HTTP, real freshclam."""

from __future__ import annotations

import email
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from helpers.events import recorded
from helpers.sig_fixtures import (
    SignatureServer,
    closed_port,
    freshclam_conf,
    hash_line,
    scan_bytes,
)
from scanmail.cli.sigupdate import main
from scanmail.errors import ConfigError, ExitCode
from scanmail.events import Event
from scanmail.sigupdate.canary import CANARY_FILE
from scanmail.sigupdate.freshclam import freshclam_meaning, judge_freshclam
from scanmail.sigupdate.sources import target_name
from scanmail.sigupdate.steps import StepError
from scanmail.spool import read_spool_file
from scanmail.testing import PrivateClamd, eicar

EnvWriter = Callable[..., Path]
SAMPLE = b"scanmail sigupdate test sample: clean until its signature is published\n"
OLD = time.time() - 10 * 86400


@pytest.fixture
def server() -> Iterator[SignatureServer]:
    """Signature files served over HTTP on loopback."""
    httpd = SignatureServer()
    httpd.start()
    yield httpd
    httpd.stop()


@pytest.fixture
def sig_db(tmp_path: Path) -> Path:
    """A database directory of our own with one fresh hand-made file (EICAR)."""
    db = tmp_path / "sigdb"
    db.mkdir()
    (db / "local.hdb").write_text(hash_line(eicar(), "Eicar-Test-Signature"))
    return db


@pytest.fixture
def own_clamd(tmp_path: Path, clamd_db: Path) -> Iterator[PrivateClamd]:
    """A clamd whose database directory (a copy of the test database) the test may change.

    Not private_clamd: that one shares the session database folder with every other test.
    """
    db = tmp_path / "clamdb"
    db.mkdir()
    shutil.copy(clamd_db / "test.hdb", db / "test.hdb")
    server = PrivateClamd(tmp_path / "clamd", db_dir=db)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(write_env: EnvWriter, sig_db: Path) -> EnvWriter:
    """The .env for sigupdate: no freshclam, no clamd, our own database, unless overridden."""

    def write(**settings: str) -> Path:
        values = {
            "SIG_DB_DIR": str(sig_db),
            "FRESHCLAM_COMMAND": "",
            "SCANNER": "command",
            "CLAMD_TIMEOUT": "10",
        }
        values.update(settings)
        return write_env(**values)

    return write


def clamd_env(env: EnvWriter, clamd: PrivateClamd, **settings: str) -> Path:
    """The .env for sigupdate driving our own clamd."""
    return env(SCANNER="clamd", CLAMD_SOCKET=str(clamd.socket), SIG_DB_DIR=str(clamd.db_dir),
               **settings)


def sigupdate(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def events(spool_root: Path) -> list[Event]:
    return recorded(spool_root / "var", "sigupdate")


def alerts(spool_root: Path) -> list[Message]:
    """The alert mails queued in outgoing, oldest first."""
    found = []
    for path in sorted((spool_root / "outgoing").iterdir(), key=lambda p: p.stat().st_mtime_ns):
        found.append(email.message_from_bytes(read_spool_file(path).read_message()))
    return found


def crafted_cvd(path: Path, built: datetime) -> None:
    """A .cvd that is only a 512-byte header with this build time: unsigned, so sigtool
    --info prints the header (and fails verification) and clamd would refuse to load it."""
    stamp = built.strftime("%d %b %Y %H-%M +0000")
    header = f"ClamAV-VDB:{stamp}:27000:100:90:{'0' * 32}:X:scanmail-test:{int(built.timestamp())}"
    path.write_bytes(header.encode().ljust(512, b" ") + b"no body")


# freshclam's exit statuses


@pytest.mark.parametrize(
    ("status", "code", "name"),
    [
        (0, ExitCode.OK, "up to date"),
        (1, ExitCode.OK, "FC_UPTODATE"),
        (2, ExitCode.CONFIG, "FC_EINIT"),
        (11, ExitCode.TEMPFAIL, "HTTP GET failed"),
        (17, ExitCode.FAILURE, "FC_EFORBIDDEN"),
        (52, ExitCode.TEMPFAIL, "network"),
        (54, ExitCode.FAILURE, "verification"),
        (56, ExitCode.CONFIG, "config file"),
        (59, ExitCode.TEMPFAIL, "not fully synchronized"),
        (99, ExitCode.FAILURE, "unknown"),
        (-9, ExitCode.FAILURE, "signal 9"),
    ],
)
def test_freshclam_exit_statuses_have_names_and_weights(
    status: int, code: ExitCode, name: str
) -> None:
    meaning, weight = freshclam_meaning(status)
    assert name in meaning
    assert weight is code


def test_freshclam_cooldown_is_reported_even_with_status_0() -> None:
    output = "WARNING: You are still on cool-down until after: 2026-11-27 13:25:57\n"
    assert "cool-down until 2026-11-27 13:25:57" in judge_freshclam(0, output)


def test_freshclam_failure_names_the_first_error() -> None:
    output = "ERROR: Parse error at f.conf:3: Unknown option Bogus\nERROR: Can't open/parse\n"
    with pytest.raises(StepError) as caught:
        judge_freshclam(2, output)
    assert caught.value.exit_code is ExitCode.CONFIG
    assert "FC_EINIT" in str(caught.value) and "Unknown option Bogus" in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://h/x/extra.ndb", "https://h/a/b.hdb?x=1", "file:///srv/sigs/local.yara"]
)
def test_source_names_clamav_loads_are_accepted(url: str) -> None:
    assert target_name(url) == url.split("/")[-1].split("?")[0]


@pytest.mark.parametrize(
    "url",
    ["http://h/daily.cvd", "http://h/main.hdb", "http://h/notes.txt", "http://h/",
     "http://h/a%2F..%2Fevil.hdb", f"http://h/{CANARY_FILE}"],
)
def test_source_names_that_clash_or_would_not_load_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        target_name(url)


# reload: clamd learns new signatures without a restart


def test_published_signature_is_detected_after_reload_without_restart(
    env: EnvWriter, own_clamd: PrivateClamd, server: SignatureServer, spool_root: Path
) -> None:
    assert scan_bytes(own_clamd, SAMPLE) == "stream: OK"
    url = server.publish("extra.hdb", hash_line(SAMPLE, "Scanmail.Test.Sample").encode())
    assert own_clamd.process is not None
    pid = own_clamd.process.pid

    result = sigupdate(clamd_env(env, own_clamd, SIG_SOURCES=url))

    assert result.exit_code == 0, result.output
    assert scan_bytes(own_clamd, SAMPLE).startswith("stream: Scanmail.Test.Sample")
    assert scan_bytes(own_clamd, eicar()).endswith("FOUND")  # the old signatures still load
    assert own_clamd.process.pid == pid and own_clamd.process.poll() is None
    assert oct((own_clamd.db_dir / "extra.hdb").stat().st_mode & 0o777) == "0o644"
    [event] = events(spool_root)
    assert event.verdict == "updated"
    assert "extra.hdb: installed (signatures: 1)" in event.detail
    assert "clamd: reloaded, confirmed after" in event.detail
    assert alerts(spool_root) == []


def test_run_with_nothing_new_confirms_clamd_without_reloading(
    env: EnvWriter, own_clamd: PrivateClamd, server: SignatureServer, spool_root: Path
) -> None:
    url = server.publish("extra.hdb", hash_line(SAMPLE, "Scanmail.Test.Sample").encode())
    config = clamd_env(env, own_clamd, SIG_SOURCES=url)
    assert sigupdate(config).exit_code == 0
    canary = (own_clamd.db_dir / CANARY_FILE).read_text()

    assert sigupdate(config).exit_code == 0

    assert (own_clamd.db_dir / CANARY_FILE).read_text() == canary  # no new canary: no reload
    last = events(spool_root)[-1]
    assert last.verdict == "current"
    assert "extra.hdb: unchanged" in last.detail and "clamd: already runs" in last.detail


def test_corrupt_and_truncated_files_are_refused_and_the_rest_installed(
    env: EnvWriter, own_clamd: PrivateClamd, server: SignatureServer, spool_root: Path
) -> None:
    good = hash_line(SAMPLE, "Scanmail.Test.Sample").encode()
    first = server.publish("extra.hdb", good)
    config = clamd_env(env, own_clamd, SIG_SOURCES=first)
    assert sigupdate(config).exit_code == 0
    installed = (own_clamd.db_dir / "extra.hdb").read_bytes()
    many = "".join(hash_line(f"sample {i}".encode(), f"Scanmail.Many.{i}") for i in range(50))
    sources = [
        server.publish("extra.hdb", b"<html><body>Service Unavailable</body></html>\n"),
        server.publish("cut.hdb", many.encode(), mode="truncate"),
        server.publish("cutline.hdb", many.encode()[:-20], mode="nolength"),
        server.publish("other.hdb", hash_line(b"another sample\n", "Scanmail.Other").encode()),
    ]

    result = sigupdate(clamd_env(env, own_clamd, SIG_SOURCES=" ".join(sources)))

    assert result.exit_code == ExitCode.FAILURE, result.output
    assert (own_clamd.db_dir / "extra.hdb").read_bytes() == installed
    assert not (own_clamd.db_dir / "cut.hdb").exists()
    assert not (own_clamd.db_dir / "cutline.hdb").exists()
    assert (own_clamd.db_dir / "other.hdb").exists()  # one broken source stops no other
    assert not [p for p in own_clamd.db_dir.iterdir() if p.name.startswith(".")]
    assert scan_bytes(own_clamd, SAMPLE).startswith("stream: Scanmail.Test.Sample")
    assert scan_bytes(own_clamd, b"another sample\n").startswith("stream: Scanmail.Other")
    event = events(spool_root)[-1]
    assert event.verdict == "failed"
    assert set(event.reason.split()) == {f"source:{url}" for url in sources[:3]}
    assert "ClamAV cannot load it" in event.detail
    assert "truncated download" in event.detail
    [alert] = alerts(spool_root)
    assert "signature update failing" in alert["Subject"]


def test_clamd_down_is_temporary_and_the_next_run_finds_it_current(
    env: EnvWriter, own_clamd: PrivateClamd, server: SignatureServer, spool_root: Path
) -> None:
    url = server.publish("extra.hdb", hash_line(SAMPLE, "Scanmail.Test.Sample").encode())
    config = clamd_env(env, own_clamd, SIG_SOURCES=url)
    own_clamd.stop()

    result = sigupdate(config)

    assert result.exit_code == ExitCode.TEMPFAIL
    assert (own_clamd.db_dir / "extra.hdb").exists()
    assert events(spool_root)[-1].reason == "reload"
    own_clamd.start()  # loads the directory, canary included
    assert sigupdate(config).exit_code == 0
    assert "clamd: already runs this database" in events(spool_root)[-1].detail
    assert len(alerts(spool_root)) == 2  # the failure, then all clear


def test_reload_is_not_confirmed_when_clamd_reads_another_folder(
    env: EnvWriter, own_clamd: PrivateClamd, sig_db: Path, spool_root: Path
) -> None:
    config = env(SCANNER="clamd", CLAMD_SOCKET=str(own_clamd.socket), CLAMD_TIMEOUT="1")

    result = sigupdate(config)

    assert result.exit_code == ExitCode.FAILURE
    event = events(spool_root)[-1]
    assert event.reason == "reload"
    assert "is SIG_DB_DIR clamd's DatabaseDirectory?" in event.detail


def test_reload_over_tcp(
    env: EnvWriter, tmp_path: Path, clamd_db: Path, server: SignatureServer
) -> None:
    db = tmp_path / "tcpdb"
    db.mkdir()
    shutil.copy(clamd_db / "test.hdb", db / "test.hdb")
    clamd = PrivateClamd(tmp_path / "tcpclamd", db_dir=db)
    clamd.configure()
    port = closed_port()
    with clamd.conf.open("a") as conf:
        conf.write(f"TCPSocket {port}\nTCPAddr 127.0.0.1\n")
    url = server.publish("extra.hdb", hash_line(SAMPLE, "Scanmail.Test.Sample").encode())
    with clamd:
        config = env(SCANNER="clamd", CLAMD_SOCKET=f"tcp://127.0.0.1:{port}",
                     SIG_DB_DIR=str(db), SIG_SOURCES=url)
        result = sigupdate(config)
        assert result.exit_code == 0, result.output
        assert scan_bytes(clamd, SAMPLE).startswith("stream: Scanmail.Test.Sample")


# freshclam for real, against a loopback mirror that cannot serve


def test_unreachable_mirror_is_named_and_alerted_once_per_streak(
    env: EnvWriter, sig_db: Path, tmp_path: Path, spool_root: Path
) -> None:
    conf = freshclam_conf(tmp_path / "freshclam.conf", sig_db, closed_port())
    failing = f"freshclam --config-file={conf}"
    config = env(FRESHCLAM_COMMAND=failing)

    results = [sigupdate(config) for _ in range(3)]

    assert [r.exit_code for r in results] == [ExitCode.TEMPFAIL] * 3
    for event in events(spool_root):
        assert event.verdict == "failed" and event.reason == "freshclam"
        assert "exit status 11, FC_EFAILEDGET: HTTP GET failed" in event.detail
    [alert] = alerts(spool_root)
    assert alert["Subject"] == "[scanmail] signature update failing: freshclam"
    assert "FC_EFAILEDGET" in alert.get_payload()
    assert "Couldn't connect to server" in alert.get_payload()  # freshclam's own output

    assert sigupdate(env()).exit_code == 0  # the streak ends: one all-clear notice
    assert sigupdate(env(FRESHCLAM_COMMAND=failing)).exit_code == ExitCode.TEMPFAIL  # new streak
    subjects = [a["Subject"] for a in alerts(spool_root)]
    assert subjects[1:] == [
        "[scanmail] signature updates working again",
        "[scanmail] signature update failing: freshclam",
    ]


def test_freshclam_config_error_is_exit_78(
    env: EnvWriter, sig_db: Path, tmp_path: Path, spool_root: Path
) -> None:
    conf = freshclam_conf(tmp_path / "freshclam.conf", sig_db, closed_port(), "NoSuchOption 1\n")

    result = sigupdate(env(FRESHCLAM_COMMAND=f"freshclam --config-file={conf}"))

    assert result.exit_code == ExitCode.CONFIG
    assert "Unknown option NoSuchOption" in events(spool_root)[-1].detail


def test_missing_freshclam_is_a_config_error(env: EnvWriter, spool_root: Path) -> None:
    result = sigupdate(env(FRESHCLAM_COMMAND="/nonexistent/freshclam"))

    assert result.exit_code == ExitCode.CONFIG
    assert "cannot run /nonexistent/freshclam" in events(spool_root)[-1].detail


# staleness


def test_stale_hand_made_database_alarms_once_and_check_exits_1(
    env: EnvWriter, sig_db: Path, spool_root: Path
) -> None:
    os.utime(sig_db / "local.hdb", (OLD, OLD))  # only hand-made files: their mtime is the age
    config = env()

    check = sigupdate(config, "--check")
    runs = [sigupdate(config) for _ in range(2)]

    assert check.exit_code == 1
    assert "signatures stale: newest 10.0 days old (file time of local.hdb)" in check.output
    assert [r.exit_code for r in runs] == [ExitCode.FAILURE] * 2
    [alert] = alerts(spool_root)
    assert alert["Subject"] == "[scanmail] signature update failing: stale"
    assert [e.verdict for e in events(spool_root)] == ["stale", "failed", "failed"]


def test_fresh_database_raises_nothing(env: EnvWriter, spool_root: Path) -> None:
    config = env()

    check = sigupdate(config, "--check")
    run = sigupdate(config)

    assert (check.exit_code, run.exit_code) == (0, 0)
    assert "signatures fresh: newest 0.0 days old" in check.output
    assert alerts(spool_root) == []
    assert [e.verdict for e in events(spool_root)] == ["fresh", "current"]


@pytest.mark.parametrize(("age", "status"), [(timedelta(days=10), 1), (timedelta(hours=2), 0)])
def test_official_database_age_is_its_build_time(
    env: EnvWriter, sig_db: Path, age: timedelta, status: int
) -> None:
    # local.hdb was just written; with a .cvd present only build times count
    crafted_cvd(sig_db / "daily.cvd", datetime.now(UTC) - age)

    check = sigupdate(env(), "--check")

    assert check.exit_code == status
    assert "(build time of daily.cvd)" in check.output
    assert "daily.cvd: version 27000, build time" in check.output


@pytest.mark.parametrize("content", [None, b"not a cvd at all"])
def test_no_dated_database_is_stale(env: EnvWriter, tmp_path: Path, content: bytes | None) -> None:
    db = tmp_path / "db"
    db.mkdir()
    if content is not None:
        (db / "daily.cvd").write_bytes(content)
        (db / "local.hdb").write_text(hash_line(b"x", "X"))  # fresh, but a .cvd decides

    check = sigupdate(env(SIG_DB_DIR=str(db)), "--check")

    assert check.exit_code == 1
    assert "no dated signature database in" in check.output


def test_check_reports_what_clamd_runs(
    env: EnvWriter, own_clamd: PrivateClamd, spool_root: Path
) -> None:
    config = clamd_env(env, own_clamd)
    assert sigupdate(config).exit_code == 0

    check = sigupdate(config, "--check")

    assert check.exit_code == 0
    assert "clamd: ClamAV " in check.output
    assert "runs the database last installed by sigupdate" in check.output


# sources and runs


def test_file_source_is_installed_with_the_publisher_time(
    env: EnvWriter, sig_db: Path, tmp_path: Path
) -> None:
    source = tmp_path / "published" / "team.ndb"
    source.parent.mkdir()
    source.write_text("Scanmail.Team.Ndb:0:*:7363616e6d61696c2d7465616d2d74657374\n")
    os.utime(source, (OLD, OLD))

    result = sigupdate(env(SIG_SOURCES=source.as_uri()))

    assert result.exit_code == ExitCode.OK
    assert (sig_db / "team.ndb").read_bytes() == source.read_bytes()
    assert abs((sig_db / "team.ndb").stat().st_mtime - OLD) < 2


def test_bad_source_names_are_config_errors_and_others_still_run(
    env: EnvWriter, sig_db: Path, server: SignatureServer, spool_root: Path
) -> None:
    good = server.publish("good.hdb", hash_line(b"x\n", "Scanmail.X").encode())
    other = server.publish("sub/good.hdb", hash_line(b"y\n", "Scanmail.Y").encode())
    sources = [server.url("daily.hdb"), good, other, server.url("missing.hdb")]

    result = sigupdate(env(SIG_SOURCES=" ".join(sources)))

    assert result.exit_code == ExitCode.CONFIG
    assert (sig_db / "good.hdb").read_text() == hash_line(b"x\n", "Scanmail.X")
    detail = events(spool_root)[-1].detail
    assert "maintained by freshclam" in detail
    assert "a second source named good.hdb" in detail
    assert "HTTP 404" in detail


def test_missing_database_directory_is_a_config_error(
    env: EnvWriter, tmp_path: Path, spool_root: Path
) -> None:
    result = sigupdate(env(SIG_DB_DIR=str(tmp_path / "nowhere")))
    assert result.exit_code == ExitCode.CONFIG
    assert set(events(spool_root)[-1].reason.split()) == {"database", "stale"}


def test_a_second_run_while_one_holds_the_lock_exits_0(
    env: EnvWriter, spool_root: Path
) -> None:
    from scanmail.spool import run_lock

    config = env()
    with run_lock(spool_root / "var" / "sigupdate.lock") as held:
        assert held
        result = sigupdate(config)
    assert result.exit_code == 0
    assert "another sigupdate is running" in result.output
    assert events(spool_root)[-1].verdict == "busy"
