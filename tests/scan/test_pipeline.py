"""The scanning pass through the real CLI, a real clamd and real spool files."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers.cli import run_scanmail
from helpers.events import rows
from helpers.mail import RCPT, SENDER, enqueue, folder_of, message, nested
from helpers.outgoing import outgoing_mail
from scanmail.cli.scan import main
from scanmail.spool import list_complete, read_spool_file
from scanmail.testing import TESTFILES, PrivateClamd, eicar


def events(root: Path) -> list[sqlite3.Row]:
    return rows(root)


def alerts(root: Path) -> list[str]:
    return [m.decode() for m in outgoing_mail(root) if b"Subject: [scanmail]" in m]


def test_clean_message_goes_out_with_only_the_scanned_header_added(spool_root, write_env):
    env = write_env()
    original = message("clean one", "Dear Bob,\nall fine.\n")
    path = enqueue(spool_root, original)
    code, _ = run_scanmail(env, "--once")
    assert code == 0
    assert folder_of(spool_root, path.name) == ["outgoing"]
    out = read_spool_file(spool_root / "outgoing" / path.name)
    assert out.envelope.sender == SENDER and out.envelope.recipients == (RCPT,)
    assert out.read_message() == b"X-Virus-Scanned: ClamAV using scanmail\r\n" + original
    [row] = events(spool_root)
    assert (row["kind"], row["verdict"], row["reason"]) == ("scan", "deliver", "clean")
    assert row["message_id"].startswith("<") and row["size"] == len(original)


def test_scanned_header_is_configurable_and_can_be_switched_off(spool_root, write_env):
    original = message("no header")
    path = enqueue(spool_root, original)
    code, _ = run_scanmail(write_env(SCANNED_HEADER=""), "--once")
    assert code == 0
    assert read_spool_file(spool_root / "outgoing" / path.name).read_message() == original


def test_banned_name_is_quarantined_with_record_and_admin_alert(spool_root, write_env):
    path = enqueue(spool_root, message("invoice", attachments=[("invoice.pdf.exe", b"MZ")]))
    code, _ = run_scanmail(write_env(), "--once")
    assert code == 0
    assert folder_of(spool_root, path.name) == ["quarantine"]
    record = (spool_root / "quarantine" / f"{path.name}.d" / "record").read_text()
    assert "Reason: banned" in record and "Attachment: invoice.pdf.exe" in record
    assert f"To: <{RCPT}>" in record and f"From: <{SENDER}>" in record
    [alert] = alerts(spool_root)
    assert "banned" in alert and path.name in alert and SENDER in alert
    assert f"scanmail quarantine release {path.name}" in alert


def test_infected_message_is_quarantined_with_the_virus_name(spool_root, write_env):
    data = message("fun", attachments=[("joke.txt", eicar())])
    path = enqueue(spool_root, data)
    arrived = path.read_bytes()
    code, _ = run_scanmail(write_env(), "--once")
    assert code == 0
    quarantined = spool_root / "quarantine" / path.name
    assert quarantined.read_bytes() == arrived  # the spool file, byte for byte
    assert read_spool_file(quarantined).read_message() == data
    parts_dir = spool_root / "quarantine" / f"{path.name}.d" / "parts"
    parts = sorted(p.name for p in parts_dir.iterdir())
    assert any(name.endswith("joke.txt") for name in parts)
    [row] = events(spool_root)
    assert row["reason"] == "infected" and row["viruses"].startswith("Eicar-Test-Signature")
    assert row["attachments"] == "joke.txt"
    assert "Eicar-Test-Signature" in alerts(spool_root)[0]


def test_sender_notice_only_when_configured(spool_root, write_env):
    enqueue(spool_root, message("v1", attachments=[("a.txt", eicar())]))
    run_scanmail(write_env(), "--once")
    assert not [m for m in outgoing_mail(spool_root) if b"Virus found" in m]
    enqueue(spool_root, message("v2", attachments=[("a.txt", eicar())]))
    enqueue(spool_root, message("v3", attachments=[("a.txt", eicar())]), sender="")
    run_scanmail(write_env(NOTIFY_SENDER="yes"), "--once")
    notices = [p for p in list_complete(spool_root / "outgoing")
               if b"Virus found" in read_spool_file(p).read_message()]
    assert len(notices) == 1  # never to the null sender
    notice = read_spool_file(notices[0])
    assert notice.envelope.recipients == (SENDER,) and notice.envelope.sender == ""
    assert b"Eicar-Test-Signature" in notice.read_message()


def test_malformed_envelope_is_quarantined_not_dropped(spool_root, write_env):
    bad = spool_root / "incoming" / "smtpdbadenvelope"
    bad.write_bytes(b"HELO there\nnot an envelope\n")
    os.chmod(bad, 0o750)
    code, _ = run_scanmail(write_env(), "--once")
    assert code == 0
    assert folder_of(spool_root, bad.name) == ["quarantine"]
    assert (spool_root / "quarantine" / bad.name).read_bytes() == b"HELO there\nnot an envelope\n"
    assert "malformed" in alerts(spool_root)[0]


def test_incomplete_files_are_left_alone(spool_root, write_env):
    partial = spool_root / "incoming" / "smtpdbeingwritten"
    partial.write_bytes(b"FROM <a@b>\nRCPT <c@d>\nBODY\nSubject: half")
    run_scanmail(write_env(), "--once")
    assert folder_of(spool_root, partial.name) == ["incoming"]


@pytest.mark.parametrize(
    ("setting", "value", "why"),
    [("DECODE_MAX_BYTES", "1000", "decoded size"), ("DECODE_MAX_PARTS", "3", "parts"),
     ("DECODE_MAX_DEPTH", "2", "nesting")],
)
def test_message_past_a_decoding_limit_is_unchecked(spool_root, write_env, setting, value, why):
    data = nested(nested(message("deep", attachments=[("a.bin", os.urandom(5000)),
                                                      ("b.bin", b"x")])))
    path = enqueue(spool_root, data)
    code, _ = run_scanmail(write_env(**{setting: value}), "--once")
    assert code == 0
    assert folder_of(spool_root, path.name) == ["quarantine"]
    [row] = events(spool_root)
    assert row["reason"] == "unchecked" and why in row["detail"]


def test_suspect_policy_scans_only_matches_doc_hits(spool_root, write_env):
    (spool_root / "etc" / "matches.doc").write_text("filename=.*\\.doc$\n")
    hidden = enqueue(spool_root, message("plain", attachments=[("notes.txt", eicar())]))
    suspect = enqueue(spool_root, message("doc", attachments=[("report.doc", eicar())]))
    code, _ = run_scanmail(write_env(SCAN_POLICY="suspect"), "--once")
    assert code == 0
    # As the seed did: only the suspect one is scanned. SCAN_POLICY=all exists for this.
    assert folder_of(spool_root, hidden.name) == ["outgoing"]
    assert folder_of(spool_root, suspect.name) == ["quarantine"]
    hidden_out = read_spool_file(spool_root / "outgoing" / hidden.name).read_message()
    assert not hidden_out.startswith(b"X-Virus-Scanned")  # it was not scanned


def test_scanner_down_keeps_mail_exits_75_and_alerts_once(
    spool_root, write_env, private_clamd: PrivateClamd
):
    env = write_env(CLAMD_SOCKET=str(private_clamd.socket))
    first = [enqueue(spool_root, message(f"m{i}")) for i in range(3)]
    private_clamd.stop()
    for _ in range(3):
        code, _ = run_scanmail(env, "--once")
        assert code == 75
    assert all(folder_of(spool_root, p.name) == ["incoming"] for p in first)
    assert len(alerts(spool_root)) == 1  # one alert per outage, not per message or pass
    assert "unavailable" in alerts(spool_root)[0]
    private_clamd.start()
    code, _ = run_scanmail(env, "--once")
    assert code == 0
    assert all(folder_of(spool_root, p.name) == ["outgoing"] for p in first)
    assert any("back" in a for a in alerts(spool_root))
    kinds = [(r["kind"], r["reason"]) for r in events(spool_root) if r["kind"] == "outage"]
    assert kinds == [("outage", "down"), ("outage", "up")]


def test_clamd_stopped_mid_pass_passes_nothing_unscanned(
    spool_root, write_env, private_clamd: PrivateClamd
):
    env = write_env(CLAMD_SOCKET=str(private_clamd.socket), SCAN_WORKERS="1")
    paths = [enqueue(spool_root, message(f"n{i}", attachments=[("d.bin", os.urandom(300_000))]))
             for i in range(40)]
    infected = [enqueue(spool_root, message(f"v{i}", attachments=[("x.txt", eicar())]))
                for i in range(5)]
    import threading
    import time

    def stop_after_some_went_out() -> None:
        deadline = time.monotonic() + 60
        while len(list((spool_root / "outgoing").iterdir())) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        private_clamd.stop()

    stopper = threading.Thread(target=stop_after_some_went_out)
    stopper.start()
    code, _ = run_scanmail(env, "--once")
    stopper.join()
    assert code == 75
    assert any(folder_of(spool_root, p.name) == ["incoming"] for p in paths)
    for path in infected:
        assert "outgoing" not in folder_of(spool_root, path.name)
    scanned = {r["qid"] for r in events(spool_root) if r["kind"] == "scan"}
    for path in paths:
        where = folder_of(spool_root, path.name)
        assert len(where) == 1
        if where == ["outgoing"]:
            assert path.name in scanned
    private_clamd.start()
    code, _ = run_scanmail(env, "--once")
    assert code == 0
    assert all(folder_of(spool_root, p.name) == ["outgoing"] for p in paths)
    assert all(folder_of(spool_root, p.name) == ["quarantine"] for p in infected)


def test_second_scanmail_exits_zero_while_the_lock_is_held(spool_root, write_env):
    env = write_env()
    path = enqueue(spool_root, message("waiting"))
    with open(spool_root / "var" / "scanmail.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = CliRunner().invoke(main, ["--config", str(env), "--once"])
    assert result.exit_code == 0
    assert "lock" in result.output
    assert folder_of(spool_root, path.name) == ["incoming"]


def test_command_scanner_judged_by_exit_code(spool_root, write_env, clamd_db):
    command = f"clamscan --no-summary --infected --database={clamd_db} {{}}"
    env = write_env(SCANNER="command", SCANNER_COMMAND=command)
    clean = enqueue(spool_root, message("c", attachments=[("a.txt", b"harmless")]))
    bad = enqueue(spool_root, message("v", attachments=[("b.txt", eicar())]))
    code, _ = run_scanmail(env, "--once")
    assert code == 0
    assert folder_of(spool_root, clean.name) == ["outgoing"]
    assert folder_of(spool_root, bad.name) == ["quarantine"]
    row = next(r for r in events(spool_root) if r["qid"] == bad.name)
    assert row["viruses"].startswith("Eicar-Test-Signature")


def test_command_scanner_error_exit_is_not_clean(spool_root, write_env):
    env = write_env(SCANNER="command", SCANNER_COMMAND="clamscan --database=/nonexistent {}")
    path = enqueue(spool_root, message("c"))
    code, _ = run_scanmail(env, "--once")
    assert code == 75
    assert folder_of(spool_root, path.name) == ["incoming"]


def test_clamd_over_tcp(spool_root, write_env, tmp_path_factory, clamd_db):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = PrivateClamd(tmp_path_factory.mktemp("clamd-tcp"), db_dir=clamd_db)
    server.configure()
    server.conf.write_text(server.conf.read_text() + f"TCPSocket {port}\nTCPAddr 127.0.0.1\n")
    with server:
        env = write_env(CLAMD_SOCKET=f"tcp://127.0.0.1:{port}")
        bad = enqueue(spool_root, message("v", attachments=[("b.txt", eicar())]))
        code, _ = run_scanmail(env, "--once")
    assert code == 0
    assert folder_of(spool_root, bad.name) == ["quarantine"]


def test_large_attachment_over_20_mb_is_streamed_whole(spool_root, write_env, tmp_path):
    import zipfile

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("filler.bin", os.urandom(21 << 20))
        zf.write(TESTFILES / "clam.exe", "tools/setup.dat")  # the virus after 21 MB
    big_bad = enqueue(spool_root, message("big", attachments=[("data.zip", archive.read_bytes())]))
    big_ok = enqueue(spool_root, message("big ok", attachments=[("d.bin", os.urandom(21 << 20))]))
    code, _ = run_scanmail(write_env(), "--once")
    assert code == 0
    assert folder_of(spool_root, big_bad.name) == ["quarantine"]
    assert folder_of(spool_root, big_ok.name) == ["outgoing"]


def test_dry_run_prints_verdicts_and_moves_nothing(spool_root, write_env):
    ok = enqueue(spool_root, message("ok"))
    bad = enqueue(spool_root, message("bad", attachments=[("x.scr", b"MZ")]))
    code, output = run_scanmail(write_env(), "--once", "--dry-run")
    assert code == 0
    assert f"{ok.name}: deliver clean" in output
    assert f"{bad.name}: quarantine banned" in output and "x.scr" in output
    assert folder_of(spool_root, ok.name) == ["incoming"]
    assert folder_of(spool_root, bad.name) == ["incoming"]
    assert not (spool_root / "var" / "events.sqlite").exists() or not events(spool_root)


def test_temp_dirs_are_removed_and_leftovers_cleaned(spool_root, write_env):
    leftover = spool_root / "tmp" / "smtpdcrashed_d"
    leftover.mkdir()
    (leftover / "0001-part").write_bytes(b"old")
    half_written = spool_root / "tmp" / "smtpdhalfwritten"
    half_written.write_bytes(b"FROM <a@b>\nRCPT <c@d>\nBODY\nSubj")
    os.utime(half_written, (time.time() - 2 * 86400,) * 2)
    being_written = spool_root / "tmp" / "smtpdbeingwritten"
    being_written.write_bytes(b"FROM <a@b>\n")
    enqueue(spool_root, message("a", attachments=[("x.doc", b"doc")]))
    run_scanmail(write_env(), "--once")
    assert not leftover.exists() and not half_written.exists()
    assert [p.name for p in (spool_root / "tmp").iterdir()] == ["smtpdbeingwritten"]
