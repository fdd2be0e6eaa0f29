"""daysumm: the day's figures from the event database, the text and HTML renderings, the CLI."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest

from helpers.cli import run_command
from helpers.mail import message
from helpers.outgoing import parsed, queued
from helpers.report_days import (
    AFTER,
    DAY,
    HOSTILE_NAME,
    HOSTILE_SUBJECT,
    at,
    hostile_day,
    quarantine_message,
    record_day,
    scan,
)
from scanmail.cli.daysumm import main
from scanmail.config import Config, load_config
from scanmail.daysumm import model, output, queries
from scanmail.daysumm.html import render_page
from scanmail.daysumm.text import WIDTH, render_text
from scanmail.events import Event, EventLog
from scanmail.scan import runner
from scanmail.spool import Envelope, Spool, list_complete
from scanmail.testing import eicar
from scanmail.untrusted import one_line


@pytest.fixture
def config(spool_root: Path) -> Config:
    return Config.from_mapping({"SPOOL_DIR": str(spool_root), "HOSTNAME": "gw.corp.example",
                                "ADMIN_EMAIL": "admin@corp.example"})


@pytest.fixture
def events(config: Config) -> Iterator[EventLog]:
    with EventLog(config.var_dir) as log:
        yield log


def make(config: Config, day: date = DAY, now: float = AFTER) -> model.Report:
    return queries.make_report(config, day, now)


# -- the figures ---------------------------------------------------------------------------

def test_counts_follow_the_event_database(config, events):
    record_day(events, DAY, clean=20, banned=3, infected=2, unchecked=1, malformed=1)
    events.record(Event("retry", qid="q1", time=at(DAY, 3)), quiet=True)
    events.record(Event("retry", qid="q1", time=at(DAY, 4)), quiet=True)  # the same message
    events.record(Event("retry", qid="q2", time=at(DAY, 4)), quiet=True)
    events.record(Event("release", qid="q0311000021", time=at(DAY, 9)), quiet=True)
    events.record(Event("delete", qid="q0311000022", time=at(DAY, 9)), quiet=True)
    for verdict in ("delivered", "delivered", "deferred", "failed"):
        events.record(Event("delivery", verdict=verdict, time=at(DAY, 10)), quiet=True)
    events.record(Event("bounce", time=at(DAY, 10)), quiet=True)
    counts = make(config).counts
    assert counts == model.DayCounts(
        DAY, received=27, delivered=20, quarantined=7, banned=3, infected=2, unchecked=1,
        malformed=1, retried=2, released=1, deleted=1, size=27000, forwarded=2, deferred=1,
        failed=1, bounces=1,
    )


def test_a_day_runs_from_local_midnight_to_midnight(config, events):
    events.record(scan("before", at(DAY, 0) - 0.001), quiet=True)
    events.record(scan("first", at(DAY, 0)), quiet=True)
    events.record(scan("last", at(DAY, 23, 59, 59.999)), quiet=True)
    events.record(scan("after", at(DAY + timedelta(days=1), 0)), quiet=True)
    made = make(config)
    assert made.counts.received == 2
    assert made.hours[0] == 1 and made.hours[23] == 1 and sum(made.hours) == 2
    assert made.history[-2].received == 1 and made.history[-2].day == DAY - timedelta(days=1)


def test_any_day_reported_at_any_time_gives_the_same_report(config, events):
    record_day(events, DAY, clean=5, infected=2)
    first = make(config, now=AFTER)
    record_day(events, DAY + timedelta(days=1), clean=9, banned=4)  # the next day goes on
    later = make(config, now=AFTER + 86400 * 40)
    assert dataclasses.replace(later, generated=AFTER) == first
    assert render_text(make(config)) == render_text(make(config))
    assert not first.partial and make(config, DAY, at(DAY, 15)).partial


def test_the_day_is_compared_with_the_previous_seven_days(config, events):
    for back in range(1, 8):
        record_day(events, DAY - timedelta(days=back), clean=100, infected=back % 2 * 4)
    record_day(events, DAY - timedelta(days=8), clean=5000)  # outside the week: ignored
    record_day(events, DAY, clean=104, infected=30)
    made = make(config)
    assert made.compare("received") == model.Change(134, pytest.approx(716 / 7))
    infected = made.compare("infected")
    assert infected.value == 30 and infected.average == pytest.approx(16 / 7)
    assert infected.is_jump and not made.compare("received").is_jump
    line = next(line for line in render_text(made).splitlines() if "infected" in line)
    assert line.rstrip().endswith("<<")
    assert output.subject_line(made).endswith(" - unusual: quarantined, infected")


def test_a_drop_is_a_jump_too_but_small_numbers_are_not():
    assert model.Change(10, 100.0).is_jump
    assert model.Change(300, 100.0).is_jump
    assert not model.Change(140, 100.0).is_jump
    assert not model.Change(3, 0.0).is_jump and model.Change(6, 0.0).is_jump
    assert model.Change(0, 0.0).percent == "" and model.Change(6, 0.0).percent == "new"
    assert model.Change(150, 100.0).percent == "+50%"


def test_viruses_senders_recipients_and_names_of_blocked_mail(config, events):
    rows = [
        ("a@x.example", ("bob@corp.example",), ("Win.Trojan.A", "Eicar"), ("a.doc",)),
        ("a@x.example", ("bob@corp.example", "carol@corp.example"), ("Eicar",), ("b.zip",)),
        ("", ("carol@corp.example",), ("Eicar",), ("b.zip",)),
    ]
    for i, (sender, rcpts, viruses, names) in enumerate(rows):
        events.record(scan(f"v{i}", at(DAY, 8), "infected", viruses, sender, rcpts, names),
                      quiet=True)
    events.record(scan("b1", at(DAY, 9), "banned", sender="d@y.example",
                       attachments=("run.exe",)), quiet=True)
    events.record(scan("c1", at(DAY, 9), sender="clean@z.example"), quiet=True)  # not blocked
    made = make(config)
    tally = [(t.name, t.count) for t in made.viruses]
    assert tally == [("Eicar", 3), ("Win.Trojan.A", 1)]
    assert [(t.name, t.count) for t in made.senders] == [
        ("a@x.example", 2), ("<>", 1), ("d@y.example", 1)]
    assert [(t.name, t.count) for t in made.recipients] == [
        ("bob@corp.example", 3), ("carol@corp.example", 2)]
    assert [(t.name, t.count) for t in made.attachments] == [
        ("b.zip", 2), ("a.doc", 1), ("run.exe", 1)]
    assert dict(made.virus_history)["Eicar"][-1] == 3


def test_outages_count_and_their_downtime_is_clipped_to_the_day(config, events):
    events.record(Event("outage", reason="down", time=at(DAY, 0) - 600), quiet=True)
    events.record(Event("outage", reason="up", time=at(DAY, 0, 10)), quiet=True)
    events.record(Event("outage", reason="down", time=at(DAY, 12)), quiet=True)
    events.record(Event("outage", reason="up", time=at(DAY, 12, 30)), quiet=True)
    events.record(Event("outage", reason="down", time=at(DAY, 23, 50)), quiet=True)
    outages = make(config).outages
    assert outages == model.Outages(count=2, downtime=(10 + 30 + 10) * 60, down_at_end=True)
    assert "outages: 2, down 50 min in all (still down at the end)" in render_text(make(config))


def test_signatures_are_the_last_update_known_at_the_end_of_the_day(config, events):
    assert make(config).signatures is None
    events.record(Event("sigupdate", verdict="updated", detail="daily 27000",
                        time=at(DAY, 1)), quiet=True)
    events.record(Event("sigupdate", verdict="failed", detail="network down",
                        time=at(DAY, 13)), quiet=True)
    events.record(Event("sigupdate", verdict="ok", detail="daily 27001",
                        time=at(DAY + timedelta(days=1), 1)), quiet=True)
    sig = make(config).signatures
    assert sig == model.Signatures(at(DAY, 13), "failed", "network down", runs=2, failures=1,
                                    good_age=23 * 3600)
    assert "last good update: 23 h old at the end of the day" in render_text(make(config))


def test_backlog_is_what_waits_in_the_spool_now(config, spool_root):
    spool = Spool(spool_root)
    envelope = Envelope("a@x.example", ("b@corp.example",))
    old = spool.write("incoming", envelope, [b"Subject: old\r\n\r\nx\r\n"])
    spool.write("incoming", envelope, [b"Subject: new\r\n\r\nx\r\n"])
    spool.write("incoming", envelope, [b"half"], complete=False)  # still being written
    spool.write("outgoing", envelope, [b"Subject: out\r\n\r\nx\r\n"])
    now = time.time()
    os.utime(old, (now - 7200, now - 7200))
    backlog = {folder.name: folder for folder in make(config, now=now).backlog}
    assert backlog["incoming"].files == 2
    assert backlog["incoming"].oldest_age == pytest.approx(7200, abs=5)
    assert backlog["outgoing"].files == 1 and backlog["failed"].files == 0
    assert backlog["quarantine"] == model.Folder("quarantine", 0, None, 0)


def test_blocked_messages_show_their_subject_and_status_as_of_now(config, events, spool_root):
    events.record(scan("smtpdkept", at(DAY, 8), "banned", attachments=("a.exe",)), quiet=True)
    events.record(scan("smtpdgone", at(DAY, 9), "infected", ("Eicar",)), quiet=True)
    events.record(scan("smtpdlater", at(DAY, 10), "banned"), quiet=True)
    events.record(Event("release", qid="smtpdgone", time=at(DAY, 11)), quiet=True)
    events.record(Event("delete", qid="smtpdlater", time=AFTER + 3600), quiet=True)
    quarantine_message(spool_root, "smtpdkept", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=")
    blocked = {b.qid: b for b in make(config).blocked}
    assert [b.qid for b in make(config).blocked] == ["smtpdlater", "smtpdgone", "smtpdkept"]
    assert blocked["smtpdkept"].subject == "Grüße" and blocked["smtpdgone"].subject is None
    assert blocked["smtpdgone"].status is model.Status.RELEASED
    assert blocked["smtpdlater"].status is model.Status.QUARANTINED  # deleted after the report
    assert make(config, now=AFTER + 7200).blocked[0].status is model.Status.DELETED


# -- rendering -----------------------------------------------------------------------------



def test_text_fits_80_columns_and_shows_no_control_characters(config, events, spool_root):
    hostile_day(events, spool_root)
    text = render_text(make(config))
    assert all(len(line) <= WIDTH for line in text.splitlines())
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", text)
    assert "invoice?fdp.exe" in text  # the bidi override that hid ".exe" is shown
    assert f"subject: {HOSTILE_SUBJECT}"[:60] in text
    assert "Messages received" in text and "Eicar-Test-Signature" in text


def test_printable_values_are_valid_utf8_without_controls_or_bidi_overrides():
    assert one_line("caf\udce9.exe") == "caf\ufffd.exe"  # a raw 8-bit byte
    assert one_line("a\x1b[31m\u202eb\u2066") == "a?[31m?b?"
    assert one_line("x" * 500) == "x" * 199 + "\u2026"


def test_html_escapes_everything_that_came_from_a_message(config, events, spool_root):
    hostile_day(events, spool_root)
    page = render_page(make(config))
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;.exe" in page
    assert "&lt;b&gt;Virus&lt;/b&gt;" in page
    assert "\x1b" not in page and "\u202e" not in page


class Tags(HTMLParser):
    """Every start tag of a page, with its attribute names."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.attributes: set[str] = set()
        self.csp = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attributes.update(name for name, _ in attrs)
        values = dict(attrs)
        if tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.csp = values.get("content") or ""


def test_the_page_is_self_contained(config, events, spool_root):
    hostile_day(events, spool_root)
    page = render_page(make(config))
    parsed = Tags()
    parsed.feed(page)
    assert not {"script", "img", "iframe", "link", "object", "embed", "a"} & parsed.tags.keys()
    assert not {"src", "href", "srcset", "action"} & parsed.attributes
    assert not [name for name in parsed.attributes if name.startswith("on")]
    assert parsed.csp == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    assert not re.search(r"url\(|@import", page)
    assert parsed.tags["svg"] == 5  # four 30-day charts and the hours


def test_empty_database_reports_without_error(config):
    made = make(config)
    assert made.counts == model.DayCounts(DAY)
    text = render_text(made)
    assert "Messages received" in text and "signatures: no update recorded yet" in text
    assert "<svg" in render_page(made)


# -- the command line ----------------------------------------------------------------------

def run_daysumm(env: Path, *args: str) -> tuple[int, str]:
    return run_command(main, env, *args)


def reports_in_outgoing(root: Path) -> list[tuple[Envelope, EmailMessage]]:
    return [(spool_file.envelope, parsed(spool_file)) for spool_file in queued(root)]


def test_daysumm_mails_text_and_html_to_the_admin(spool_root, write_env):
    env = write_env()
    with EventLog(spool_root / "var") as events:
        record_day(events, DAY, clean=10, infected=2)
    code, output = run_daysumm(env, "--date", DAY.isoformat())
    assert code == 0
    if os.path.exists("/dev/log"):
        assert output == ""
    else:  # no syslog: the log line goes to stderr rather than nowhere, and nothing else
        assert all(line.startswith("daysumm: qid=") for line in output.splitlines())
    [(envelope, msg)] = reports_in_outgoing(spool_root)
    assert envelope.sender == "" and envelope.recipients == ("admin@corp.example",)
    assert msg["To"] == "admin@corp.example"
    assert msg["Subject"] == (  # the first day ever: everything is new
        "[scanmail] 2025-03-11: 12 received, 2 quarantined, 2 infected - unusual: received")
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    assert "Eicar-Test-Signature" in text.get_content()
    assert "<svg" not in html.get_content() and "Eicar-Test-Signature" in html.get_content()


def test_daysumm_print_writes_the_text_and_mails_nothing(spool_root, write_env):
    env = write_env()
    code, output = run_daysumm(env, "--print", "--date", DAY.isoformat())
    assert code == 0
    assert output.startswith("scanmail daily report for Tuesday 11 March 2025, gw.corp.example")
    assert list_complete(spool_root / "outgoing") == []


def test_daysumm_yesterday_and_today(spool_root, write_env):
    env = write_env()
    yesterday = date.today() - timedelta(days=1)
    code, output = run_daysumm(env, "--print", "--yesterday")
    assert code == 0 and f"{yesterday:%A %d %B %Y}" in output
    assert "not over" not in output
    code, output = run_daysumm(env, "--print")
    assert code == 0 and f"{date.today():%A %d %B %Y}" in output and "not over" in output


def test_daysumm_html_writes_the_page_and_mails_nothing(spool_root, write_env, tmp_path):
    page = tmp_path / "www" / "index.html"
    page.parent.mkdir()
    code, _ = run_daysumm(write_env(), "--html", str(page), "--date", DAY.isoformat())
    assert code == 0
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert page.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in page.parent.iterdir()] == ["index.html"]  # no temporary left
    assert list_complete(spool_root / "outgoing") == []


def test_daysumm_refuses_bad_usage(spool_root, write_env, tmp_path):
    env = write_env()
    assert run_daysumm(env, "--date", "2025-03-11", "--yesterday")[0] == 2
    assert run_daysumm(env, "--date", "11/03/2025")[0] == 2
    tomorrow = date.today() + timedelta(days=1)
    assert run_daysumm(env, "--date", tomorrow.isoformat())[0] == 2
    assert run_daysumm(env, "--html", str(tmp_path / "no" / "such" / "dir.html"))[0] == 73
    assert run_daysumm(write_env(ADMIN_EMAIL="nobody"), "--print")[0] == 78
    assert list_complete(spool_root / "outgoing") == []


# -- end to end: a day made by the real pipeline ---------------------------------------------

def test_report_counts_equal_the_spool_and_the_events_after_a_real_pass(spool_root, write_env):
    """Clean, banned and infected mail through the real pipeline and clamd, then daysumm."""
    spool = Spool(spool_root)
    plan = (
        [("clean", message(f"report {i}", "Hello.\n")) for i in range(6)]
        + [("banned", message(f"invoice {i}", attachments=[(f"invoice{i}.exe", b"MZ")]))
           for i in range(3)]
        + [("infected", message(f"fun {i}", attachments=[("joke.txt", eicar())]))
           for i in range(2)]
        + [("banned", message(HOSTILE_SUBJECT, attachments=[(HOSTILE_NAME, b"MZ")]))]
    )
    qids = {}
    for i, (expected, data) in enumerate(plan):
        envelope = Envelope(f"sender{i % 3}@outside.example", ("bob@corp.example",))
        qids[spool.write("incoming", envelope, [data]).name] = expected
    config = load_config(write_env())
    runner.run(config)

    with EventLog(config.var_dir) as events:
        scans = list(events.query(kinds=["scan"]))
    day = date.fromtimestamp(scans[0].time)
    made = queries.make_report(config, day)
    in_folder = {name: {p.name for p in list_complete(spool.folder(name))}
                 for name in ("incoming", "outgoing", "quarantine")}
    expected = Counter(qids.values())
    assert made.counts.received == len(qids) == len(scans)
    assert made.counts.delivered == len(in_folder["outgoing"] & qids.keys()) == expected["clean"]
    assert made.counts.quarantined == len(in_folder["quarantine"]) == 6
    assert made.counts.banned == expected["banned"] == 4
    assert made.counts.infected == expected["infected"] == 2
    assert made.counts.retried == 0 and not in_folder["incoming"]
    assert Counter(e.reason for e in scans) == Counter(
        {"clean": made.counts.delivered, "banned": made.counts.banned,
         "infected": made.counts.infected})
    assert [(t.name.split(".")[0], t.count) for t in made.viruses] == [("Eicar-Test-Signature", 2)]
    assert {b.qid for b in made.blocked} == in_folder["quarantine"]
    assert HOSTILE_SUBJECT in {b.subject for b in made.blocked}
    backlog = {folder.name: folder.files for folder in made.backlog}
    assert backlog["quarantine"] == 6
    assert backlog["outgoing"] == len(in_folder["outgoing"])  # the clean mail and the alerts

    output.run(config, day)  # and the mail goes out beside them
    [(_, msg)] = [(e, m) for e, m in reports_in_outgoing(spool_root)
                  if m["Subject"].startswith(f"[scanmail] {day.isoformat()}")]
    assert "12 received, 6 quarantined, 2 infected" in msg["Subject"]
