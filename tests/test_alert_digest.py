"""Alert storms: a burst of infected mail through a real pass makes one alert, then a digest."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

from conftest import EnvWriter
from helpers.mail import enqueue, message
from scanmail.config import load_config
from scanmail.digest import DIGEST_LINES, FOLDER
from scanmail.scan import runner
from scanmail.spool import list_complete, read_spool_file
from scanmail.testing import eicar

BURST = 30


def alerts_in_outgoing(root: Path) -> list[EmailMessage]:
    found = []
    for path in list_complete(root / "outgoing"):
        spool_file = read_spool_file(path)
        if spool_file.envelope.recipients == ("admin@corp.example",):
            msg = email.message_from_bytes(spool_file.read_message(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            found.append(msg)
    return found


def infected_burst(root: Path, count: int) -> list[str]:
    return [enqueue(root, message(f"burst {i}", attachments=[(f"doc{i}.txt", eicar())])).name
            for i in range(count)]


def test_a_burst_makes_one_alert_at_once_then_one_digest(
    spool_root: Path, write_env: EnvWriter
) -> None:
    config = load_config(write_env())
    qids = infected_burst(spool_root, BURST)
    assert runner.run(config).reasons["infected"] == BURST
    first = alerts_in_outgoing(spool_root)
    assert len(first) == 1  # the first of the burst went at once
    assert str(first[0]["Subject"]).startswith("[scanmail] infected: ")
    assert len((spool_root / "var" / FOLDER / "infected.held").read_text().splitlines()) \
        == BURST - 1
    runner.run(config)  # a pass inside the window: still held
    assert len(alerts_in_outgoing(spool_root)) == 1
    last = spool_root / "var" / FOLDER / "infected.last"
    last.write_text(f"{float(last.read_text()) - config.alert_digest_minutes * 60 - 1}\n")
    runner.run(config)  # the window has passed: the digest goes
    digests = [m for m in alerts_in_outgoing(spool_root) if "more messages" in str(m["Subject"])]
    assert len(digests) == 1
    subject = f"[scanmail] {BURST - 1} more messages quarantined: infected"
    assert str(digests[0]["Subject"]) == subject
    body = digests[0].get_content()
    listed = [qid for qid in qids if qid in body]
    assert len(listed) == DIGEST_LINES  # the first twenty, with their quarantine ids
    assert f"and {BURST - 1 - DIGEST_LINES} more" in body
    assert "scanmail quarantine list --reason infected --since" in body
    assert not (spool_root / "var" / FOLDER / "infected.held").exists()


def test_a_lone_alert_after_a_quiet_window_goes_at_once(
    spool_root: Path, write_env: EnvWriter
) -> None:
    config = load_config(write_env(ALERT_DIGEST_MINUTES="0"))
    infected_burst(spool_root, 3)
    runner.run(config)
    assert len(alerts_in_outgoing(spool_root)) == 3  # digests off: every alert


def test_banned_alert_subject_names_the_file(spool_root: Path, write_env: EnvWriter) -> None:
    config = load_config(write_env())
    enqueue(spool_root, message("banned", attachments=[("invoice.exe", b"MZ not really")]))
    runner.run(config)
    [alert] = alerts_in_outgoing(spool_root)
    assert "invoice.exe" in str(alert["Subject"])
