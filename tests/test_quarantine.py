"""The quarantine's admin side: records, release, delete, purge, examine, on real spools."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.mail import RCPT, SENDER, message
from scanmail import mime, quarantine
from scanmail.admin import show
from scanmail.events import EventLog
from scanmail.quarantine import QuarantineError, Record
from scanmail.spool import Envelope, Spool

DAY = 86400.0
LIMITS = mime.Limits()


def store(root: Path, data: bytes, reason: str = "banned", age: float = 0.0,
          attachments: tuple[str, ...] = ("invoice.exe",), viruses: tuple[str, ...] = ()
          ) -> str:
    """Quarantine data the way the pass does (quarantine.store), aged by age seconds."""
    spool = Spool(root)
    path = spool.write("incoming", Envelope(SENDER, (RCPT,)), [data])
    workdir = spool.tmp / f"{path.name}_d"
    workdir.mkdir()
    (workdir / "0002-invoice.exe").write_bytes(b"MZ")
    when = time.time() - age
    detail = f"{attachments[0]!r} matched matches.bad:1: exe" if reason == "banned" else ""
    record = Record(qid=path.name, reason=reason, time=when, sender=SENDER, recipients=(RCPT,),
                    size=len(data), viruses=viruses, attachments=attachments, detail=detail)
    quarantine.store(spool, path, record, workdir)
    os.utime(spool.quarantine / path.name, (when, when))
    return path.name


@pytest.fixture
def events(spool_root: Path) -> Iterator[EventLog]:
    with EventLog(spool_root / "var") as log:
        yield log


def test_records_are_newest_first_and_name_the_virus_or_banned_name(spool_root):
    old = store(spool_root, message("old"), age=3 * DAY)
    new = store(spool_root, message("new"), reason="infected", viruses=("Eicar",),
                attachments=("a.txt",))
    found = quarantine.records(Spool(spool_root))
    assert [r.qid for r in found] == [new, old]
    assert [r.what for r in found] == ["Eicar", "invoice.exe"]


def test_a_message_without_record_is_listed_from_its_envelope(spool_root):
    qid = store(spool_root, message("lost record"))
    (spool_root / "quarantine" / f"{qid}.d" / "record").unlink()
    [record] = quarantine.records(Spool(spool_root))
    assert (record.qid, record.reason, record.sender, record.recipients) == (
        qid, "unknown", SENDER, (RCPT,))


def test_a_mangled_record_does_not_break_the_list(spool_root):
    qid = store(spool_root, message("mangled"))
    (spool_root / "quarantine" / f"{qid}.d" / "record").write_text("Time: soon\nSize: big\n")
    [record] = quarantine.records(Spool(spool_root))
    assert (record.qid, record.reason) == (qid, "unknown")


def test_release_moves_the_identical_file_to_outgoing_and_records_who(spool_root, events):
    qid = store(spool_root, message("false alarm"))
    original = (spool_root / "quarantine" / qid).read_bytes()
    target = quarantine.release(Spool(spool_root), qid, events, "alice")
    assert target == spool_root / "outgoing" / qid
    assert target.read_bytes() == original
    assert target.stat().st_mode & 0o777 == 0o750
    assert not (spool_root / "quarantine" / qid).exists()
    assert not (spool_root / "quarantine" / f"{qid}.d").exists()
    event = events.last("release", qid)
    assert event is not None and event.detail == "by alice"
    assert (event.sender, event.recipients, event.reason) == (SENDER, (RCPT,), "banned")


def test_release_gives_the_file_a_fresh_mtime_for_the_forwarder(spool_root, events):
    qid = store(spool_root, message("old one"), age=10 * DAY)
    target = quarantine.release(Spool(spool_root), qid, events, "alice")
    assert time.time() - target.stat().st_mtime < 60


def test_a_second_release_is_refused_saying_when_and_by_whom(spool_root, events):
    qid = store(spool_root, message("twice"))
    quarantine.release(Spool(spool_root), qid, events, "alice")
    with pytest.raises(QuarantineError, match=f"{qid}: already released .* by alice"):
        quarantine.release(Spool(spool_root), qid, events, "bob")
    assert len(list(events.query(kinds=["release"]))) == 1


def test_release_does_not_overwrite_a_file_in_outgoing(spool_root, events):
    qid = store(spool_root, message("clash"))
    (spool_root / "outgoing" / qid).write_bytes(b"other")
    target = quarantine.release(Spool(spool_root), qid, events, "alice")  # a fresh name
    assert target.name.startswith(f"{qid}-") and target.is_file()
    assert (spool_root / "outgoing" / qid).read_bytes() == b"other"
    assert not (spool_root / "quarantine" / qid).exists()


def test_a_message_with_an_unreadable_envelope_is_not_released(spool_root, events):
    qid = store(spool_root, message("broken"))
    path = spool_root / "quarantine" / qid
    path.write_bytes(b"garbage\n" + path.read_bytes())
    with pytest.raises(QuarantineError, match="envelope is unreadable"):
        quarantine.release(Spool(spool_root), qid, events, "alice")
    assert path.exists()


def test_an_objecting_rescan_keeps_the_message_unless_forced(spool_root, events):
    qid = store(spool_root, message("still bad"))

    def vet(path: Path) -> str:
        return "infected (Eicar)"

    with pytest.raises(QuarantineError, match=r"rescan: infected \(Eicar\); kept"):
        quarantine.release(Spool(spool_root), qid, events, "alice", vet)
    assert (spool_root / "quarantine" / qid).exists()
    quarantine.release(Spool(spool_root), qid, events, "alice", vet, force=True)
    event = events.last("release", qid)
    assert event is not None and event.detail == "by alice, forced past rescan: infected (Eicar)"


def test_delete_removes_message_and_extras_and_a_second_delete_is_refused(spool_root, events):
    qid = store(spool_root, message("bye"))
    quarantine.delete(Spool(spool_root), qid, events, "alice")
    assert not list((spool_root / "quarantine").iterdir())
    event = events.last("delete", qid)
    assert event is not None and event.detail == "by alice"
    with pytest.raises(QuarantineError, match=f"{qid}: already deleted .* by alice"):
        quarantine.delete(Spool(spool_root), qid, events, "alice")


@pytest.mark.parametrize("qid", ["../etc/passwd", "x/y", ".hidden", "smtpd1.d", "", "a" * 200])
def test_ids_that_are_not_spool_names_are_refused(spool_root, events, qid):
    with pytest.raises(QuarantineError, match="not a spool id"):
        quarantine.release(Spool(spool_root), qid, events, "alice")


def test_an_unknown_id_is_not_in_quarantine(spool_root, events):
    with pytest.raises(QuarantineError, match="smtpd0: not in quarantine"):
        quarantine.delete(Spool(spool_root), "smtpd0", events, "alice")


def test_purge_deletes_only_what_is_older_than_the_cutoff(spool_root, events):
    old = store(spool_root, message("old"), age=31 * DAY)
    older = store(spool_root, message("older"), age=90 * DAY)
    young = store(spool_root, message("young"), age=29 * DAY)
    spool = Spool(spool_root)
    cutoff = time.time() - 30 * DAY
    assert [r.qid for r in quarantine.expired(spool, cutoff)] == [older, old]
    gone = quarantine.purge(spool, cutoff, events, "cron")
    assert sorted(r.qid for r in gone) == sorted([old, older])
    assert quarantine.list_ids(spool) == [young]
    assert (spool_root / "quarantine" / f"{young}.d" / "record").exists()
    deletions = list(events.query(kinds=["delete"]))
    assert sorted(e.qid for e in deletions) == sorted([old, older])
    assert all(e.detail.startswith("by cron (purge of mail quarantined before ") for e in deletions)


def test_purge_clears_old_extras_left_without_a_message_but_not_new_ones(spool_root, events):
    old = store(spool_root, message("old orphan"), age=40 * DAY)
    new = store(spool_root, message("new orphan"))
    for qid in (old, new):  # as a crash between the move and the clean-up would leave them
        (spool_root / "quarantine" / qid).rename(spool_root / "outgoing" / qid)
    quarantine.purge(Spool(spool_root), time.time() - 30 * DAY, events, "cron")
    assert not (spool_root / "quarantine" / f"{old}.d").exists()
    assert (spool_root / "quarantine" / f"{new}.d").exists()


def test_examine_shows_decoded_headers_the_part_tree_and_stored_parts(spool_root):
    data = message("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", attachments=[("invoice.exe", b"MZ" * 100)])
    qid = store(spool_root, data)
    seen = show.examine(Spool(spool_root), qid, LIMITS)
    assert ("Subject", "Grüße") in seen.headers
    assert ("From", SENDER) in seen.headers
    types = [(p.depth, p.content_type, p.names) for p in seen.parts]
    assert types[0] == (0, "multipart/mixed", [])
    assert (1, "application/octet-stream", ["invoice.exe"]) in types
    sizes = [p.size for p in seen.parts if p.names == ["invoice.exe"] and p.origin == "mime"]
    assert sizes == [200]
    assert seen.stored == (("0002-invoice.exe", 2),)
    assert seen.problem == ""


def test_examine_reports_a_message_past_the_limits_without_failing(spool_root):
    qid = store(spool_root, message("big", attachments=[("a.bin", b"x" * 5000)]))
    seen = show.examine(Spool(spool_root), qid, mime.Limits(max_bytes=1000))
    assert seen.problem.startswith("decoding stopped: decoded size over 1000")
    assert seen.parts[0].content_type == "multipart/mixed"


def test_examine_of_an_unreadable_envelope_shows_the_record_only(spool_root):
    qid = store(spool_root, message("broken"))
    path = spool_root / "quarantine" / qid
    path.write_bytes(b"garbage\n" + path.read_bytes())
    seen = show.examine(Spool(spool_root), qid, LIMITS)
    assert seen.problem.startswith("envelope unreadable")
    assert seen.headers == () and seen.record.qid == qid
