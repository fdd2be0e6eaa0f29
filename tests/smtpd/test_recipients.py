"""Recipient verification at RCPT (issue 12): unknown users refused in the session, never
bounced later. Real receiver on loopback; the internal server is a real aiosmtpd sink."""

from __future__ import annotations

import os
import smtplib
import time
from pathlib import Path

from helpers.receiver import running
from helpers.smtp_sink import Sink, free_port
from scanmail.config import load_config
from scanmail.smtpd.recipients import RecipientsFile
from scanmail.spool import list_complete

LOCAL = {"LOCAL_DOMAINS": "corp.example", "RELAY_NETWORKS": "192.0.2.0/24"}
MESSAGE = b"From: ann@ext.example\r\nTo: bob@corp.example\r\nSubject: hi\r\n\r\nhello\r\n"


def rcpt(port: int, *addresses: str) -> list[int]:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo("client.example")
        smtp.mail("ann@ext.example")
        return [smtp.rcpt(address)[0] for address in addresses]


def test_probe_is_the_default_with_local_domains(write_env) -> None:
    with Sink() as sink:
        sink.handler.rcpt_replies["nobody@corp.example"] = ["550 5.1.1 <nobody>: User unknown"]
        config = load_config(write_env(RECIPIENT_VERIFY="auto", RELAY_HOST="127.0.0.1",
                                       RELAY_PORT=str(sink.port), **LOCAL))
        with running(config) as port:
            assert rcpt(port, "bob@corp.example", "nobody@corp.example") == [250, 550]
            # Both answers are cached: the sink is not asked again (its script is used up,
            # so a second probe of nobody would now say 250).
            assert rcpt(port, "bob@corp.example", "nobody@corp.example") == [250, 550]
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                refused = smtp.sendmail("ann@ext.example",
                                        ["bob@corp.example", "nobody@corp.example"], MESSAGE)
            assert list(refused) == ["nobody@corp.example"]
            assert refused["nobody@corp.example"][1].startswith(b"5.1.1")
    assert sink.messages == []  # a probe never delivers
    assert len(list_complete(config.spool_dir / "incoming")) == 1


def test_probe_tempfails_when_the_internal_server_is_down(write_env) -> None:
    config = load_config(write_env(RECIPIENT_VERIFY="probe", RELAY_HOST="127.0.0.1",
                                   RELAY_PORT=str(free_port()), **LOCAL))
    with running(config) as port:
        assert rcpt(port, "bob@corp.example") == [450]
    with Sink() as sink:
        sink.handler.rcpt_replies["bob@corp.example"] = ["451 4.3.0 try later"]
        config = load_config(write_env(RECIPIENT_VERIFY="probe", RELAY_HOST="127.0.0.1",
                                       RELAY_PORT=str(sink.port), **LOCAL))
        with running(config) as port:
            assert rcpt(port, "bob@corp.example") == [450]
            assert rcpt(port, "bob@corp.example") == [250]  # a tempfail is not cached


def test_trusted_clients_and_postmaster_are_not_probed(write_env) -> None:
    config = load_config(write_env(RECIPIENT_VERIFY="probe", RELAY_HOST="127.0.0.1",
                                   RELAY_PORT=str(free_port()), LOCAL_DOMAINS="corp.example",
                                   RELAY_NETWORKS="127.0.0.0/8"))
    with running(config) as port:
        assert rcpt(port, "bob@corp.example") == [250]
    config = load_config(write_env(RECIPIENT_VERIFY="probe", RELAY_HOST="127.0.0.1",
                                   RELAY_PORT=str(free_port()), **LOCAL))
    with running(config) as port:
        assert rcpt(port, "postmaster") == [250]


def test_recipients_file_reloaded_when_it_changes(write_env, tmp_path: Path) -> None:
    listing = tmp_path / "recipients"
    listing.write_text("# users\nbob@corp.example\n@sales.corp.example\n")
    config = load_config(write_env(RECIPIENTS_FILE=str(listing), RECIPIENT_VERIFY="auto",
                                   LOCAL_DOMAINS="corp.example .corp.example",
                                   RELAY_NETWORKS="192.0.2.0/24"))
    with running(config) as port:
        assert rcpt(port, "bob@corp.example", "Bob@CORP.example", "carol@corp.example",
                    "anyone@sales.corp.example") == [250, 250, 550, 250]
        listing.write_text("carol@corp.example\n")
        stamp = time.time() + 5
        os.utime(listing, (stamp, stamp))  # a new mtime even on a coarse clock
        deadline = time.monotonic() + 10
        while rcpt(port, "carol@corp.example") != [250]:  # reread within FILE_CHECK
            assert time.monotonic() < deadline, "RECIPIENTS_FILE not reloaded"
            time.sleep(0.2)
        assert rcpt(port, "bob@corp.example") == [550]


def test_unreadable_recipients_file_tempfails(tmp_path: Path) -> None:
    listing = RecipientsFile(tmp_path / "missing")
    assert (listing.verdict("bob@corp.example") or "").startswith("450")
