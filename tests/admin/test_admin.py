"""The admin's commands through the real CLI: quarantine, check, status; real clamd, real spools."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from helpers.corpora import CORPORA
from helpers.events import rows
from helpers.mail import enqueue, folder_of, message
from helpers.smtp_sink import Sink
from scanmail.admin.status import version_date
from scanmail.cli.scan import main
from scanmail.events import EventLog
from scanmail.humanize import duration
from scanmail.quarantine import Record
from scanmail.testing import eicar

DAY = 86400.0


def scanmail(env: Path, *args: str, user: str = "alice") -> Result:
    """Run scanmail as the admin `user` would through sudo."""
    return CliRunner().invoke(main, ["--config", str(env), *args], env={"SUDO_USER": user})


def events(root: Path, kind: str) -> list[sqlite3.Row]:
    return rows(root, kind)


def quarantine_two(root: Path, env: Path) -> tuple[str, str, bytes]:
    """A pass that quarantines one infected and one banned message; their ids and the latter."""
    infected = enqueue(root, message("fun", attachments=[("joke.txt", eicar())])).name
    banned_path = enqueue(root, message("invoice", attachments=[("invoice.pdf.exe", b"MZ")]))
    arrived = banned_path.read_bytes()
    assert scanmail(env, "--once").exit_code == 0
    assert folder_of(root, infected) == folder_of(root, banned_path.name) == ["quarantine"]
    return infected, banned_path.name, arrived


def age(root: Path, qid: str, days: float) -> None:
    """Make a quarantined message look days old: its record's time and its mtime."""
    path = root / "quarantine" / f"{qid}.d" / "record"
    record = Record.from_text(path.read_text())
    when = time.time() - days * DAY
    path.write_text(Record(**{**record.__dict__, "time": when}).to_text())
    os.utime(root / "quarantine" / qid, (when, when))


def sig_dir(tmp_path: Path, days_old: float = 0.0) -> Path:
    """A signature folder whose newest database file is days_old."""
    folder = tmp_path / "sigs"
    folder.mkdir(exist_ok=True)
    db = folder / "local.hdb"  # undated by sigtool: its age is its mtime
    db.write_text("5d41402abc4b2a76b9719d911017c592:5:Local.Test\n")
    when = time.time() - days_old * DAY
    os.utime(db, (when, when))
    return folder


# -- quarantine release / delete ------------------------------------------------------


def test_release_puts_the_byte_identical_original_in_outgoing_and_records_it(
        spool_root, write_env):
    env = write_env()
    _, banned, arrived = quarantine_two(spool_root, env)
    result = scanmail(env, "quarantine", "release", banned)
    assert result.exit_code == 0, result.output
    assert f"released {banned}" in result.output
    assert folder_of(spool_root, banned) == ["outgoing"]
    assert (spool_root / "outgoing" / banned).read_bytes() == arrived
    assert not (spool_root / "quarantine" / f"{banned}.d").exists()
    [row] = events(spool_root, "release")
    assert (row["qid"], row["detail"], row["reason"]) == (banned, "by alice", "banned")


def test_a_second_release_is_refused_and_changes_nothing(spool_root, write_env):
    env = write_env()
    _, banned, arrived = quarantine_two(spool_root, env)
    assert scanmail(env, "quarantine", "release", banned).exit_code == 0
    again = scanmail(env, "quarantine", "release", banned, user="bob")
    assert again.exit_code == 1
    assert re.search(f"{banned}: already released .* by alice", again.output)
    assert len(events(spool_root, "release")) == 1
    assert (spool_root / "outgoing" / banned).read_bytes() == arrived


def test_rescan_keeps_a_message_that_is_still_infected_unless_forced(spool_root, write_env):
    env = write_env()
    infected, _, _ = quarantine_two(spool_root, env)
    kept = scanmail(env, "quarantine", "release", "--rescan", infected)
    assert kept.exit_code == 1
    assert "rescan: infected (Eicar-Test-Signature" in kept.output and "--force" in kept.output
    assert folder_of(spool_root, infected) == ["quarantine"]
    forced = scanmail(env, "quarantine", "release", "--rescan", "--force", infected)
    assert forced.exit_code == 0
    assert folder_of(spool_root, infected) == ["outgoing"]
    [row] = events(spool_root, "release")
    assert row["detail"].startswith("by alice, forced past rescan: infected (Eicar-Test")


def test_rescan_releases_a_banned_message_the_scanner_finds_clean(spool_root, write_env):
    env = write_env()
    _, banned, _ = quarantine_two(spool_root, env)
    result = scanmail(env, "quarantine", "release", "--rescan", banned)
    assert result.exit_code == 0, result.output
    [row] = events(spool_root, "release")
    assert row["detail"] == "by alice, rescanned clean"


def test_release_with_the_scanner_down_keeps_the_message_and_exits_75(
        spool_root, write_env, tmp_path):
    env = write_env()
    _, banned, _ = quarantine_two(spool_root, env)
    down = write_env(CLAMD_SOCKET=str(tmp_path / "no-clamd.sock"))
    result = scanmail(down, "quarantine", "release", "--rescan", banned)
    assert result.exit_code == 75
    assert folder_of(spool_root, banned) == ["quarantine"]


def test_delete_removes_the_message_and_records_who(spool_root, write_env):
    env = write_env()
    infected, banned, _ = quarantine_two(spool_root, env)
    result = scanmail(env, "quarantine", "delete", infected, user="carol")
    assert result.exit_code == 0 and f"deleted {infected}" in result.output
    assert folder_of(spool_root, infected) == []
    assert sorted(os.listdir(spool_root / "quarantine")) == [banned, f"{banned}.d"]
    [row] = events(spool_root, "delete")
    assert (row["qid"], row["detail"]) == (infected, "by carol")
    again = scanmail(env, "quarantine", "delete", infected)
    assert again.exit_code == 1 and "already deleted" in again.output


def test_an_unknown_or_hostile_id_is_refused(spool_root, write_env):
    env = write_env()
    assert scanmail(env, "quarantine", "release", "smtpd0").exit_code == 1
    result = scanmail(env, "quarantine", "show", "../etc/scanmail.env")
    assert result.exit_code == 1 and "not a spool id" in result.output


# -- quarantine list / show -----------------------------------------------------------


def test_list_is_newest_first_and_filters_by_reason_and_time(spool_root, write_env):
    env = write_env()
    infected, banned, _ = quarantine_two(spool_root, env)
    age(spool_root, infected, 3)
    lines = scanmail(env, "quarantine", "list").output.splitlines()
    assert [line.split()[0] for line in lines] == [banned, infected]
    assert "banned" in lines[0] and "invoice.pdf.exe" in lines[0]
    assert "<alice@outside.example>" in lines[0] and "bob@corp.example" in lines[0]
    assert "infected" in lines[1] and "Eicar-Test-Signature" in lines[1]
    only = scanmail(env, "quarantine", "list", "--reason", "infected").output.splitlines()
    assert [line.split()[0] for line in only] == [infected]
    recent = scanmail(env, "quarantine", "list", "--since", "1d").output.splitlines()
    assert [line.split()[0] for line in recent] == [banned]
    stamp = time.strftime("%Y-%m-%d", time.localtime(time.time() - 2 * DAY))
    dated = scanmail(env, "quarantine", "list", "--since", stamp).output.splitlines()
    assert [line.split()[0] for line in dated] == [banned]
    bad = scanmail(env, "quarantine", "list", "--since", "last tuesday")
    assert bad.exit_code == 2


def test_show_gives_record_headers_and_part_tree_but_never_the_payload(spool_root, write_env):
    env = write_env()
    data = message("look \x1b[2J here", attachments=[("joke.txt", eicar())])
    qid = enqueue(spool_root, data).name
    assert scanmail(env, "--once").exit_code == 0
    result = scanmail(env, "quarantine", "show", qid)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Reason: infected" in out and "Virus: Eicar-Test-Signature" in out
    assert "Subject: look ?[2J here" in out and "\x1b" not in out
    assert re.search(r"^ {4}application/octet-stream  'joke.txt'  68 B$", out, re.MULTILINE)
    assert f"{qid}.d/parts:" in out and "0002-joke.txt  68 B" in out
    assert b"EICAR" not in out.encode() and b"WDVPIVA" not in out.encode()  # nor its base64


# -- quarantine purge -----------------------------------------------------------------


def test_purge_removes_only_what_is_older_than_the_period(spool_root, write_env):
    env = write_env()
    infected, banned, _ = quarantine_two(spool_root, env)
    age(spool_root, infected, 31)
    age(spool_root, banned, 29)
    dry = scanmail(env, "quarantine", "purge", "--older-than", "30d", "--dry-run")
    assert dry.exit_code == 0
    assert f"would delete {infected}" in dry.output and banned not in dry.output
    assert folder_of(spool_root, infected) == ["quarantine"]
    real = scanmail(env, "quarantine", "purge", "--older-than", "30d")
    assert real.exit_code == 0 and f"deleted {infected}" in real.output
    assert folder_of(spool_root, infected) == []
    assert folder_of(spool_root, banned) == ["quarantine"]
    [row] = events(spool_root, "delete")
    assert row["qid"] == infected and row["detail"].startswith("by alice (purge")


def test_purge_defaults_to_the_retention_setting(spool_root, write_env):
    env = write_env(QUARANTINE_RETENTION_DAYS="7")
    infected, banned, _ = quarantine_two(spool_root, env)
    age(spool_root, infected, 8)
    age(spool_root, banned, 6)
    result = scanmail(env, "quarantine", "purge")
    assert result.exit_code == 0
    assert "deleted 1 messages" in result.output and "more than 7 days ago" in result.output
    assert folder_of(spool_root, infected) == [] and folder_of(spool_root, banned) == ["quarantine"]


@pytest.mark.parametrize("period", ["0", "-3d", "30x", "soon"])
def test_purge_refuses_a_period_that_is_not_one(spool_root, write_env, period):
    result = scanmail(write_env(), "quarantine", "purge", "--older-than", period)
    assert result.exit_code == 2


# -- check ------------------------------------------------------------------------------


def corpus_files() -> list[Path]:
    if not CORPORA.is_dir():
        pytest.skip(f"{CORPORA} missing: the shared corpora (set SCANMAIL_CORPORA)")
    hunny = CORPORA / "hunnysoft-mime-samples"
    noxxi = CORPORA / "noxxi-mime-is-broken"
    return [
        *(hunny / name for name in ("m0001.txt", "m0011.txt", "m0022.txt", "m0024.txt",
                                    "m1005.txt")),
        *sorted((noxxi / "hide-content").iterdir())[:4],
        *sorted((noxxi / "hide-filename").iterdir())[:4],
    ]


def expected_line(row: sqlite3.Row) -> str:
    """What describe() prints for a decision, rebuilt from the pass's scan event."""
    why = ", ".join(row["viruses"].split("\n")) if row["viruses"] else row["detail"]
    line = f"{row['verdict']} {row['reason']}"
    return f"{line} ({why})" if why else line


@pytest.mark.parametrize("name_rules", [True, False], ids=["default-rules", "scanner-only"])
def test_check_gives_the_same_verdicts_as_a_pass_over_the_same_messages(
        spool_root, write_env, name_rules):
    env = write_env()
    files = corpus_files()
    if not name_rules:  # with no banned names, the hidden EICAR must be found by clamd
        (spool_root / "etc" / "matches.bad").write_text("")
    qids = {enqueue(spool_root, path.read_bytes()).name: path.name for path in files}
    checked = scanmail(env, "check", *map(str, files))
    assert scanmail(env, "--once").exit_code == 0
    by_name = dict(line.split(": ", 1) for line in checked.stdout.splitlines())
    assert ("warning: no patterns" in checked.stderr) is not name_rules
    passed = {qids[row["qid"]]: expected_line(row) for row in events(spool_root, "scan")}
    assert by_name == passed
    reasons = {line.split()[1] for line in by_name.values()}
    assert reasons == {"clean", "banned" if name_rules else "infected"}
    assert checked.exit_code == 1


def test_check_exits_0_when_every_file_is_clean_and_moves_nothing(spool_root, write_env):
    env = write_env()
    clean = enqueue(spool_root, message("fine", attachments=[("notes.txt", b"hello")]))
    result = scanmail(env, "check", str(clean))
    assert result.exit_code == 0
    assert result.output == f"{clean.name}: deliver clean\n"
    assert folder_of(spool_root, clean.name) == ["incoming"]


def test_check_with_new_rules_tries_a_pattern_before_it_goes_live(spool_root, write_env,
                                                                  tmp_path):
    env = write_env()
    eml = tmp_path / "report.eml"
    eml.write_bytes(message("report", attachments=[("q3-report.xlsm", b"PK")]))
    assert scanmail(env, "check", str(eml)).exit_code == 0
    rules = tmp_path / "new-rules"
    rules.mkdir()
    (rules / "matches.bad").write_text(r"filename=.*\.xlsm$" + "\n")
    result = scanmail(env, "check", "--rules", str(rules), str(eml))
    assert result.exit_code == 1
    assert "report.eml: quarantine banned ('q3-report.xlsm' matched" in result.output


def test_check_exits_75_when_the_scanner_does_not_answer(spool_root, write_env, tmp_path):
    env = write_env(CLAMD_SOCKET=str(tmp_path / "no-clamd.sock"))
    eml = tmp_path / "a.eml"
    eml.write_bytes(message("a"))
    assert scanmail(env, "check", str(eml)).exit_code == 75


# -- status -----------------------------------------------------------------------------


def test_status_is_0_when_all_is_well(spool_root, write_env, tmp_path):
    relay = Sink().start()  # the internal server answers
    env = write_env(SIG_DB_DIR=str(sig_dir(tmp_path)), RELAY_HOST="127.0.0.1",
                    RELAY_PORT=str(relay.port))
    enqueue(spool_root, message("clean"))
    assert scanmail(env, "--once").exit_code == 0
    result = scanmail(env, "status")
    relay.stop()
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"^incoming +0$", out, re.MULTILINE)
    assert re.search(r"^outgoing +1   oldest \d+ s$", out, re.MULTILINE)
    assert "ClamAV" in out and "signatures 0 s old (file time of local.hdb)" in out
    assert "last decision" in out and "deliver clean" in out
    assert out.endswith("status: ok\n")


def test_signature_age_is_read_from_clamds_version_reply():
    assert version_date("ClamAV 1.0.7/27300/Mon May 13 08:36:45 2024") == time.mktime(
        (2024, 5, 13, 8, 36, 45, 0, 0, -1))
    assert version_date("ClamAV 1.4.6") is None  # no official database loaded
    assert [duration(s) for s in (5, 125, 3600, 3 * 3600 + 300, 2 * DAY, 2 * DAY + 7200)] == [
        "5 s", "2 min 5 s", "1 h", "3 h 5 min", "2 days", "2 days 2 h"]


def test_status_is_75_when_the_scanner_does_not_answer(spool_root, write_env, tmp_path):
    env = write_env(SIG_DB_DIR=str(sig_dir(tmp_path)))
    assert scanmail(env, "--once").exit_code == 0
    down = write_env(CLAMD_SOCKET=str(tmp_path / "no-clamd.sock"),
                     SIG_DB_DIR=str(sig_dir(tmp_path)))
    result = scanmail(down, "status")
    assert result.exit_code == 75
    assert "NOT ANSWERING" in result.output and "! scanner does not answer" in result.output


def test_status_is_1_when_signatures_are_stale(spool_root, write_env, tmp_path):
    env = write_env(SIG_DB_DIR=str(sig_dir(tmp_path, days_old=4)), SIG_MAX_AGE_DAYS="3")
    assert scanmail(env, "--once").exit_code == 0
    result = scanmail(env, "status")
    assert result.exit_code == 1
    assert "! signatures are 4 days old (SIG_MAX_AGE_DAYS=3)" in result.output


def test_status_is_1_when_mail_waits_too_long(spool_root, write_env, tmp_path):
    env = write_env(SIG_DB_DIR=str(sig_dir(tmp_path)))
    assert scanmail(env, "--once").exit_code == 0
    stuck = enqueue(spool_root, message("stuck"))
    long_ago = time.time() - 3600
    os.utime(stuck, (long_ago, long_ago))
    result = scanmail(env, "status")
    assert result.exit_code == 1
    assert "! incoming: a message has waited 1 h to be scanned" in result.output
    assert scanmail(env, "status", "--max-wait", "2h").exit_code == 0
    stuck.rename(spool_root / "outgoing" / stuck.name)
    result = scanmail(env, "status")
    assert result.exit_code == 1 and "! outgoing: a message has waited 1 h" in result.output


def test_status_shows_the_forwarders_deferrals(spool_root, write_env, tmp_path):
    from scanmail.events import Event

    env = write_env(SIG_DB_DIR=str(sig_dir(tmp_path)))
    waiting = enqueue(spool_root, message("later"))
    assert scanmail(env, "--once").exit_code == 0
    with EventLog(spool_root / "var") as log:
        log.record(Event(kind="delivery", qid=waiting.name, verdict="deferred",
                         detail="451 4.3.0 try again later"), quiet=True)
    result = scanmail(env, "status")
    assert "1 deferred, last: 451 4.3.0 try again later" in result.output


def test_status_is_1_before_any_pass_and_when_passes_stop(spool_root, write_env, tmp_path):
    env = write_env(SIG_DB_DIR=str(sig_dir(tmp_path)))
    fresh = scanmail(env, "status")
    assert fresh.exit_code == 1 and "! no scanning pass has run yet" in fresh.output
    assert scanmail(env, "--once").exit_code == 0
    lock = spool_root / "var" / "scanmail.lock"
    long_ago = time.time() - 2 * 3600
    os.utime(lock, (long_ago, long_ago))
    stopped = scanmail(env, "status")
    assert stopped.exit_code == 1 and "! no scanning pass for 2 h" in stopped.output


def test_status_of_a_missing_spool_is_an_io_error(tmp_path, write_env):
    env = write_env(SPOOL_DIR=str(tmp_path / "nowhere"))
    result = scanmail(env, "status")
    assert result.exit_code == 74 and "scanmail init" in result.output
