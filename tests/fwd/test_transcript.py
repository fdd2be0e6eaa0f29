"""The delivery line: relay, remote queue id, each recipient's reply and the data's, from a
real forwarder talking to a real aiosmtpd sink that answers as a real MTA would."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from helpers.events import recorded
from helpers.smtp_sink import Sink
from scanmail.config import Config, load_config
from scanmail.events import Event
from scanmail.fwd.forwarder import Forwarder
from scanmail.fwd.transcript import account, queue_id
from scanmail.fwd.transport import Attempt, Reply, relay_address
from scanmail.spool import Envelope, Spool

MESSAGE = b"From: ann@ext.example\r\nSubject: figures\r\n\r\nHello.\r\n"
POSTFIX_OK = "250 2.0.0 Ok: queued as 4ABC123"


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as running:
        yield running


@pytest.fixture
def config(write_env, sink: Sink) -> Config:
    return load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port)))


def forward(config: Config, *rcpts: str) -> Event:
    """Queue one message to rcpts, run one forwarder pass, return its delivery event."""
    path = Spool(config.spool_dir).write("outgoing", Envelope("ann@ext.example", rcpts), [MESSAGE])
    Forwarder(config).run_pass()
    [event] = [e for e in recorded(config.var_dir, "delivery") if e.qid == path.name]
    return event


def test_the_line_names_relay_queue_id_and_every_reply(
    config: Config, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.handler.data_ok = POSTFIX_OK
    sink.handler.rcpt_replies = {"nobody@corp.example": ["550 5.1.1 No such user here"]}
    with caplog.at_level(logging.INFO, logger="scanmail.events"):
        event = forward(config, "bob@corp.example", "nobody@corp.example")
    assert event.detail == (
        f"relay=127.0.0.1:{sink.port} remote_id=4ABC123 <bob@corp.example>: 250 2.1.5 OK; "
        "<nobody@corp.example>: 550 5.1.1 No such user here; "
        "data: 250 2.0.0 Ok: queued as 4ABC123"
    )
    [line] = [r.getMessage() for r in caplog.records if "event=delivery" in r.getMessage()]
    assert line.startswith(f"qid={event.qid} event=delivery from=<ann@ext.example> rcpts=2")
    assert f"detail='{event.detail}'" in line  # the syslog line carries it whole


def test_a_deferral_at_data_names_the_reply_and_no_queue_id(config: Config, sink: Sink) -> None:
    sink.handler.data_replies = ["451 4.3.0 Try again later"]
    event = forward(config, "bob@corp.example")
    assert event.verdict == "deferred"
    assert event.detail == (f"relay=127.0.0.1:{sink.port} <bob@corp.example>: 250 2.1.5 OK; "
                            "data: 451 4.3.0 Try again later")


def test_a_hostile_reply_is_shown_sanitized(config: Config, sink: Sink) -> None:
    sink.handler.data_ok = "250 2.0.0 queued as QX17\x1b[2J\u202egpj.exe"
    event = forward(config, "bob@corp.example")
    assert "remote_id=QX17 " in event.detail
    assert "data: 250 2.0.0 queued as QX17?[2J?gpj.exe" in event.detail
    assert "\x1b" not in event.detail and "\u202e" not in event.detail


@pytest.mark.parametrize(("text", "expected"), [
    ("2.0.0 Ok: queued as 4ABC123", "4ABC123"),  # Postfix
    ("OK id=1qXyZ-0001Ab-Cd", "1qXyZ-0001Ab-Cd"),  # Exim
    ("2.0.0 Queued as <B7F1.9922@mx.corp.example>", "B7F1.9922@mx.corp.example"),
    ("2.0.0 OK queued as smtpd1f2e3d4c5b6a.", "smtpd1f2e3d4c5b6a"),  # scanmail-smtpd
    ("2.6.0 <x@y> [InternalId=123] Queued mail for delivery", ""),  # names no id
    ("2.0.0 OK", ""),
])
def test_queue_id_in_the_common_replies(text: str, expected: str) -> None:
    assert queue_id(Reply(250, text)) == expected


def test_no_queue_id_is_read_from_a_refusal() -> None:
    assert queue_id(Reply(451, "4.3.0 not queued as ABC123")) == ""
    assert queue_id(None) == ""


def test_a_refused_mail_from_and_a_local_mta_still_name_each_recipient() -> None:
    refused = Attempt(relay="mx:25").refuse(["a@x", "b@x"], Reply(550, "5.7.1 sender refused"))
    assert account(refused) == "relay=mx:25 <a@x>: 550 5.7.1 sender refused; " \
                               "<b@x>: 550 5.7.1 sender refused"
    handed = Attempt(delivered=["a@x"], relay="/usr/sbin/sendmail")
    assert account(handed) == "relay=/usr/sbin/sendmail <a@x>: accepted"


def test_many_recipients_are_counted_not_listed() -> None:
    rcpts = [f"u{n}@x" for n in range(25)]
    attempt = Attempt(delivered=rcpts, relay="mx:25",
                      replies={r: Reply(250, "2.1.5 Ok") for r in rcpts},
                      data=Reply(250, "2.0.0 Ok: queued as 9F2D1"))
    text = account(attempt)
    assert text.startswith("relay=mx:25 remote_id=9F2D1 <u0@x>: 250 2.1.5 Ok; ")
    assert "<u9@x>" in text and "<u10@x>" not in text
    assert "; and 15 more recipients; data: 250 2.0.0 Ok: queued as 9F2D1" in text


def test_an_ipv6_relay_is_bracketed(write_env) -> None:
    config = load_config(write_env(RELAY_HOST="::1", RELAY_PORT="2525"))
    assert relay_address(config) == "[::1]:2525"
