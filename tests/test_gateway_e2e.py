"""The whole gateway, real processes: smtplib -> scanmail-smtpd -> scanmail -> scanmail-fwd."""

from __future__ import annotations

import email
import os
import signal
import smtplib
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest

from helpers.mail import message
from helpers.smtp_sink import Sink, free_port, wait_for_port
from scanmail import quarantine
from scanmail.config import load_config
from scanmail.events import EventLog
from scanmail.spool import Spool
from scanmail.testing import eicar

SENDER = "alice@outside.example"
BOB = "bob@corp.example"
SCANNED = b"X-Virus-Scanned: ClamAV using scanmail\r\n"


def command(name: str, *args: str) -> list[str]:
    """One of the installed console scripts (scanmail, scanmail-smtpd, scanmail-fwd)."""
    script = Path(sys.executable).parent / name
    if not script.exists():
        pytest.skip(f"{script} not installed (pip install -e .)")
    return [str(script), *args]


def strip_added(data: bytes) -> bytes:
    """The message minus the headers the gateway adds: X-Virus-Scanned, then Received."""
    assert data.startswith(SCANNED)
    lines = data[len(SCANNED):].split(b"\r\n")
    assert lines[0].startswith(b"Received: from ")
    end = next(i for i, line in enumerate(lines[1:], 1) if not line.startswith(b"\t"))
    return b"\r\n".join(lines[end:])


@pytest.fixture
def sink() -> Sink:
    with Sink() as running:
        yield running


def test_clean_banned_and_infected_mail_end_to_end(write_env, sink: Sink) -> None:
    env = write_env(
        LOCAL_DOMAINS="corp.example", RELAY_NETWORKS="192.0.2.0/24",
        RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port),
    )
    config = load_config(env)
    clean = [
        message("minutes", "The minutes are attached.\n", [("minutes.pdf", b"%PDF-1.4 minutes")]),
        "Subject: smørrebrød\r\nFrom: søren@outside.example\r\n\r\nSkål! \r\n.\r\n".encode(),
    ]
    banned = message("invoice", "Please pay.\n", [("invoice.pdf.exe", b"MZ not really")])
    infected = message("notes", "See the notes.\n", [("notes.txt", eicar())])

    port = free_port()
    daemon = subprocess.Popen(
        command("scanmail-smtpd", "--config", str(env), "--listen", f"127.0.0.1:{port}"),
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port)
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            assert smtp.sendmail(SENDER, [BOB], clean[0]) == {}
            assert smtp.sendmail("søren@outside.example", [BOB], clean[1],
                                 mail_options=["SMTPUTF8"]) == {}
            assert smtp.sendmail(SENDER, [BOB], banned) == {}
            assert smtp.sendmail(SENDER, [BOB], infected) == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                smtp.sendmail(SENDER, ["victim@elsewhere.example"], clean[0])
        daemon.send_signal(signal.SIGTERM)
        _, errors = daemon.communicate(timeout=10)
        assert daemon.returncode == 0, errors.decode()
    finally:
        if daemon.returncode is None:
            daemon.kill()
            daemon.communicate()
    assert len(os.listdir(config.spool_dir / "incoming")) == 4

    for name in ("scanmail", "scanmail-fwd"):
        run = subprocess.run(command(name, "--config", str(env), "--once"), capture_output=True)
        assert run.returncode == 0, run.stderr.decode()

    to_bob = [m for m in sink.messages if m.recipients == [BOB]]
    assert sorted(strip_added(m.content) for m in to_bob) == sorted(clean)
    alerts = [m for m in sink.messages if m.recipients == ["admin@corp.example"]]
    subjects = sorted(
        str(email.message_from_bytes(m.content, policy=policy.default)["Subject"])
        for m in alerts
    )
    assert len(sink.messages) == 4 and len(subjects) == 2
    assert subjects[0].startswith("[scanmail] banned")
    assert subjects[1].startswith("[scanmail] infected: Eicar-Test-Signature")
    spool = Spool(config.spool_dir)
    records = [quarantine.read_record(spool, qid) for qid in quarantine.list_ids(spool)]
    reasons = sorted(record.reason for record in records)
    assert reasons == ["banned", "infected"]
    for name in ("incoming", "outgoing", "failed", "tmp"):
        assert os.listdir(config.spool_dir / name) == [], name
    with EventLog(config.var_dir) as log:
        delivered = [e for e in log.query(kinds=["delivery"]) if e.verdict == "delivered"]
    assert len(delivered) == 4
