"""scanmail-fwd: real spool files delivered over real SMTP to an aiosmtpd sink on loopback."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers.events import recorded
from helpers.outgoing import parse_mail as parse
from helpers.smtp_sink import Sink, free_port
from scanmail.cli.fwd import main as fwd_main
from scanmail.config import Config, load_config
from scanmail.events import EventLog
from scanmail.fwd import forwarder, retry
from scanmail.fwd.forwarder import Forwarder
from scanmail.fwd.transport import SmtpTransport
from scanmail.spool import Envelope, Spool, list_complete, read_spool_file, run_lock

MESSAGE = (
    b"From: Ann <ann@ext.example>\r\n"
    b"To: bob@corp.example\r\n"
    b"Subject: quarterly figures\r\n"
    b"Message-ID: <1@ext.example>\r\n"
    b"\r\n"
    b"Hello.\r\n"
    b".a line that starts with a dot\r\n"
    b".\r\n"
    b"bye\r\n"
)


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as running:
        yield running


@pytest.fixture
def env(write_env, sink: Sink) -> Path:
    return write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port), FWD_INTERVAL="0.1")


@pytest.fixture
def config(env: Path) -> Config:
    return load_config(env)


class Clock:
    """The only thing the tests patch: time, to step over retry delays and lifetimes."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def queue(config: Config, *rcpts: str, sender: str = "ann@ext.example",
          message: bytes = MESSAGE, sent: tuple[str, ...] = ()) -> Path:
    """A complete spool file in outgoing, as scanmail leaves it."""
    return Spool(config.spool_dir).write("outgoing", Envelope(sender, rcpts, sent), [message])


def folder(config: Config, name: str) -> list[Path]:
    return list_complete(config.spool_dir / name)


def deliveries(sink: Sink, content: bytes = MESSAGE) -> list[str]:
    """Recipients that received this exact message."""
    return sorted(rcpt for rcpt, data in sink.handler.deliveries() if data == content)


def events(config: Config, kind: str) -> list[tuple[str, str, str]]:
    return [(e.qid, e.verdict, e.reason) for e in recorded(config.var_dir, kind)]


def dsns(config: Config, to: str) -> list[Path]:
    """Null-sender files in outgoing addressed to one sender."""
    return [
        path for path in folder(config, "outgoing")
        if read_spool_file(path).envelope == Envelope("", (to,))
    ]


def test_delivers_byte_for_byte_and_removes_the_file(config: Config, sink: Sink) -> None:
    path = queue(config, "bob@corp.example", "carol@corp.example")
    report = Forwarder(config).run_pass()
    assert (report.delivered, report.deferred, report.failed) == (1, 0, 0)
    [received] = sink.messages
    assert received.sender == "ann@ext.example"
    assert received.recipients == ["bob@corp.example", "carol@corp.example"]
    assert received.content == MESSAGE
    assert not path.exists() and os.listdir(config.spool_dir / "outgoing") == []
    assert events(config, "delivery") == [(path.name, "delivered", "sent")]


def test_lf_only_spool_files_are_sent_with_crlf(config: Config, sink: Sink) -> None:
    queue(config, "bob@corp.example", message=MESSAGE.replace(b"\r\n", b"\n").rstrip(b"\n"))
    forwarder.Forwarder(config).run_pass()
    assert sink.messages[0].content == MESSAGE


def test_null_sender_8bit_and_smtputf8(config: Config, sink: Sink) -> None:
    message = "Subject: grüße\r\n\r\nSmørrebrød \xe9\r\n".encode() + b"raw \xff byte\r\n"
    queue(config, "jörg@corp.example", sender="", message=message)
    forwarder.Forwarder(config).run_pass()
    [received] = sink.messages
    assert received.sender == "<>"
    assert received.recipients == ["jörg@corp.example"]
    assert "BODY=8BITMIME" in received.options and "SMTPUTF8" in received.options
    assert received.content == message


def test_incomplete_files_are_left_alone(config: Config, sink: Sink) -> None:
    spool = Spool(config.spool_dir)
    path = spool.write("outgoing", Envelope("a@ext.example", ("bob@corp.example",)), [MESSAGE],
                       complete=False)
    report = Forwarder(config).run_pass()
    assert (report.delivered, sink.messages) == (0, [])
    assert path.exists() and not stat.S_IMODE(path.stat().st_mode) & 0o110


def test_451_then_250_delivers_once_after_the_delay(config: Config, sink: Sink) -> None:
    sink.handler.data_replies = ["451 4.3.0 Try again later"]
    clock = Clock()
    forwarder = Forwarder(config, clock)
    path = queue(config, "bob@corp.example")
    assert forwarder.run_pass().deferred == 1
    state = json.loads((config.var_dir / "fwd" / f"{path.name}.json").read_text())
    assert state["attempts"] == 1 and state["next_try"] == clock.now + retry.RETRY_BASE
    assert read_spool_file(path).envelope.recipients == ("bob@corp.example",)
    assert forwarder.run_pass().waiting == 1  # not due yet: nothing tried
    assert sink.handler.transactions == 1
    clock.now += retry.RETRY_BASE
    assert forwarder.run_pass().delivered == 1
    assert deliveries(sink) == ["bob@corp.example"]
    assert not path.exists() and not (config.var_dir / "fwd" / f"{path.name}.json").exists()
    assert [v for _, v, _ in events(config, "delivery")] == ["deferred", "delivered"]


def test_retry_delays_grow() -> None:
    delays = [retry.retry_delay(n) for n in range(1, 10)]
    assert delays[:4] == [60, 120, 240, 480]
    assert delays == sorted(delays) and delays[-1] == retry.RETRY_MAX


def test_partial_4xx_writes_sent_lines_so_retries_never_repeat(config: Config, sink: Sink) -> None:
    sink.handler.rcpt_replies = {"carol@corp.example": ["452 4.2.2 Mailbox full"]}
    path = queue(config, "bob@corp.example", "carol@corp.example")
    forwarder = Forwarder(config)
    before = path.read_bytes()
    assert forwarder.run_pass().deferred == 1
    assert path.read_bytes() == before  # the progress is appended to var/fwd/<qid>.sent
    envelope = forwarder.sent.merged(read_spool_file(path)).envelope
    assert (envelope.recipients, envelope.sent) == (("carol@corp.example",), ("bob@corp.example",))
    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    assert read_spool_file(path).read_message() == MESSAGE
    assert forwarder.run_pass(flush=True).delivered == 1
    assert deliveries(sink) == ["bob@corp.example", "carol@corp.example"]  # each exactly once


def test_550_for_one_of_two(env: Path, config: Config, sink: Sink) -> None:
    sink.handler.rcpt_replies = {"nobody@corp.example": ["550 5.1.1 No such user here"]}
    path = queue(config, "bob@corp.example", "nobody@corp.example")
    result = CliRunner().invoke(fwd_main, ["--config", str(env), "--once"])
    assert result.exit_code == 0, result.output
    # The file is in failed/, the failed recipient still RCPT, the delivered one SENT.
    [parked] = folder(config, "failed")
    assert parked.name == path.name and os.listdir(config.spool_dir / "outgoing") == []
    envelope = read_spool_file(parked).envelope
    assert envelope.recipients == ("nobody@corp.example",)
    assert envelope.sent == ("bob@corp.example",)
    reason = (config.spool_dir / "failed" / f"{path.name}.reason").read_text()
    assert "nobody@corp.example: 550 5.1.1 No such user here" in reason
    # bob once; the DSN to the sender and the admin alert went out in the same run.
    assert deliveries(sink) == ["bob@corp.example"]
    [dsn] = [m for m in sink.messages if m.recipients == ["ann@ext.example"]]
    assert dsn.sender == "<>"
    report = parse(dsn.content)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    text, status, headers = report.iter_parts()
    assert "nobody@corp.example" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; gw.corp.example"
    assert per_recipient["Final-Recipient"] == "rfc822; nobody@corp.example"
    assert (per_recipient["Action"], per_recipient["Status"]) == ("failed", "5.1.1")
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user here"
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: quarterly figures" in headers.get_content()
    assert b"Hello." not in dsn.content  # headers only: the body is not sent back
    [alert] = [m for m in sink.messages if m.recipients == ["admin@corp.example"]]
    assert path.name in parse(alert.content)["Subject"]
    assert [k for _, k, _ in events(config, "bounce")] == ["dsn"]


def test_no_dsn_to_the_null_sender(config: Config, sink: Sink) -> None:
    sink.handler.rcpt_replies = {"gone@corp.example": ["550 5.1.1 Gone"]}
    queue(config, "gone@corp.example", sender="")
    report = Forwarder(config).run_pass()
    assert (report.failed, report.queued) == (1, 0)  # no DSN, and no alert that could loop
    assert len(folder(config, "failed")) == 1 and folder(config, "outgoing") == []


def test_one_dsn_lists_every_refused_recipient(config: Config, sink: Sink) -> None:
    queue(config, "bob@corp.example", "carol@corp.example", sender="spam@ext.example")
    sink.handler.rcpt_replies = {
        "bob@corp.example": ["554 5.7.1 Rejected"], "carol@corp.example": ["554 5.7.1 Rejected"],
    }
    report = Forwarder(config).run_pass()
    assert report.failed == 1
    [dsn] = dsns(config, "spam@ext.example")
    statuses = parse(read_spool_file(dsn).read_message()).get_payload()[1].get_payload()[1:]
    assert [s["Final-Recipient"] for s in statuses] == [
        "rfc822; bob@corp.example", "rfc822; carol@corp.example",
    ]


def test_relay_down_for_a_while(write_env) -> None:
    port = free_port()
    env = write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(port))
    config = load_config(env)
    path = queue(config, "bob@corp.example")
    before = path.read_bytes()
    for _ in range(2):
        result = CliRunner().invoke(fwd_main, ["--config", str(env), "--once"])
        assert result.exit_code == 75
        assert path.read_bytes() == before  # nothing lost, nothing marked
    assert not (config.var_dir / "fwd" / f"{path.name}.json").exists()  # no backoff for that
    with Sink(port) as sink:
        result = CliRunner().invoke(fwd_main, ["--config", str(env), "--once"])
        assert result.exit_code == 0
        assert deliveries(sink) == ["bob@corp.example"]
    assert not path.exists()


def test_lifetime_expires_into_a_bounce(write_env, sink: Sink) -> None:
    config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port),
                                   FWD_MAX_AGE_DAYS="1"))
    sink.handler.data_replies = ["451 4.3.0 Busy"] * 3
    clock = Clock()
    forwarder = Forwarder(config, clock)
    path = queue(config, "bob@corp.example")
    assert forwarder.run_pass().deferred == 1
    clock.now += 86400 + retry.RETRY_BASE
    assert forwarder.run_pass().failed == 1
    assert folder(config, "failed") == [config.spool_dir / "failed" / path.name]
    [dsn] = dsns(config, "ann@ext.example")
    status = parse(read_spool_file(dsn).read_message()).get_payload()[1].get_payload()[1]
    assert status["Status"] == "4.4.7" and "delivery time expired" in status["Diagnostic-Code"]


def test_lifetime_expires_while_the_relay_is_down(write_env) -> None:
    config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(free_port()),
                                   FWD_MAX_AGE_DAYS="2"))
    old = queue(config, "bob@corp.example")
    young = queue(config, "carol@corp.example")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    report = Forwarder(config).run_pass()
    assert report.relay_down and (report.failed, report.deferred) == (1, 1)
    assert [p.name for p in folder(config, "failed")] == [old.name]
    assert young.exists()


def test_421_drops_the_connection_and_the_next_message_goes_through(
    write_env, sink: Sink
) -> None:
    config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port),
                                   FWD_CONCURRENCY="1"))
    sink.handler.data_replies = ["421 4.3.2 Shutting down"]
    first = queue(config, "bob@corp.example")
    second = queue(config, "carol@corp.example")
    os.utime(first, (time.time() - 10,) * 2)  # oldest first
    report = Forwarder(config).run_pass()
    assert (report.deferred, report.delivered) == (1, 1)
    assert first.exists() and not second.exists()
    assert sink.handler.connections == 2


def test_concurrency_with_connection_reuse(write_env, sink: Sink) -> None:
    config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port),
                                   FWD_CONCURRENCY="3"))
    for n in range(12):
        queue(config, f"user{n}@corp.example")
    report = Forwarder(config).run_pass()
    assert report.delivered == 12
    assert deliveries(sink) == sorted(f"user{n}@corp.example" for n in range(12))
    assert sink.handler.connections <= 3  # one session per worker, reused


def test_malformed_file_is_parked(config: Config, sink: Sink) -> None:
    bad = config.spool_dir / "outgoing" / "smtpdbadbadbad"
    bad.write_bytes(b"this is not an envelope\n")
    bad.chmod(0o750)
    forwarder.Forwarder(config).run_pass()
    assert (config.spool_dir / "failed" / bad.name).exists()
    assert "malformed" in (config.spool_dir / "failed" / f"{bad.name}.reason").read_text()
    assert events(config, "delivery") == [(bad.name, "failed", "malformed")]


def test_second_forwarder_exits_at_once(env: Path, config: Config, sink: Sink) -> None:
    path = queue(config, "bob@corp.example")
    with run_lock(config.var_dir / forwarder.LOCK_NAME) as locked:
        assert locked
        result = CliRunner().invoke(fwd_main, ["--config", str(env), "--once"])
    assert result.exit_code == 0 and path.exists() and sink.messages == []


def test_daemon_loop_delivers_until_stopped(config: Config, sink: Sink) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=forwarder.run, args=(config,), kwargs={"stop": stop})
    thread.start()
    try:
        queue(config, "bob@corp.example")
        deadline = time.monotonic() + 10
        while not sink.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        queue(config, "carol@corp.example")
        while len(sink.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert deliveries(sink) == ["bob@corp.example", "carol@corp.example"]


@pytest.fixture
def fake_sendmail(tmp_path: Path) -> Path:
    """A stand-in local MTA: records its arguments and input, exits with the code it is told."""
    script = tmp_path / "sendmail"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" "=" >> {tmp_path}/argv\n'
        f"cat >> {tmp_path}/stdin\n"
        f"echo 'sendmail says hi' >&2\n"
        f"exit $(cat {tmp_path}/code)\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize(("code", "verdict", "exit_code"),
                         [(0, "delivered", 0), (75, "deferred", 75), (67, "failed", 0)])
def test_sendmail_handoff(write_env, fake_sendmail: Path, code: int, verdict: str,
                          exit_code: int) -> None:
    env = write_env(FWD_SENDMAIL=str(fake_sendmail))
    config = load_config(env)
    (fake_sendmail.parent / "code").write_text(str(code))
    path = queue(config, "bob@corp.example", "carol@corp.example")
    result = CliRunner().invoke(fwd_main, ["--config", str(env), "--once"])
    assert result.exit_code == exit_code, result.output
    calls = (fake_sendmail.parent / "argv").read_text().split("\n=\n")
    assert calls[0].split("\n") == [
        "-i", "-f", "ann@ext.example", "--", "bob@corp.example", "carol@corp.example",
    ]
    given = (fake_sendmail.parent / "stdin").read_bytes()
    assert given.startswith(MESSAGE.replace(b"\r\n", b"\n"))
    if verdict == "failed":  # the DSN and the admin alert were handed over in the same run
        assert sorted(calls[1:3]) == [
            "-i\n-f\n<>\n--\nadmin@corp.example", "-i\n-f\n<>\n--\nann@ext.example",
        ]
    with EventLog(config.var_dir) as log:
        first = next(log.query(kinds=["delivery"]))
    assert first.verdict == verdict
    assert path.exists() == (verdict == "deferred")
    if verdict == "failed":
        reason = (config.spool_dir / "failed" / f"{path.name}.reason").read_text()
        assert "exited with 67: sendmail says hi" in reason


def test_sendmail_missing_is_a_relay_outage(write_env, tmp_path: Path) -> None:
    env = write_env(FWD_SENDMAIL=str(tmp_path / "no-such-sendmail"))
    path = queue(load_config(env), "bob@corp.example")
    result = CliRunner().invoke(fwd_main, ["--config", str(env), "--once"])
    assert result.exit_code == 75 and path.exists()


def test_stale_reused_connection_is_replaced(write_env) -> None:
    with Sink(timeout=0.3) as sink:  # the relay drops idle clients after 0.3 s
        config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port)))
        transport = SmtpTransport(config)
        try:
            first = read_spool_file(queue(config, "bob@corp.example"))
            assert transport.deliver(first, ["bob@corp.example"]).delivered == ["bob@corp.example"]
            time.sleep(0.6)
            second = read_spool_file(queue(config, "carol@corp.example"))
            attempt = transport.deliver(second, ["carol@corp.example"])
        finally:
            transport.close()
        assert attempt.delivered == ["carol@corp.example"]
        assert deliveries(sink) == ["bob@corp.example", "carol@corp.example"]
        assert sink.handler.connections == 2


def test_bad_setting_exits_78(write_env) -> None:
    env = write_env(FWD_CONCURRENCY="0")
    assert CliRunner().invoke(fwd_main, ["--config", str(env), "--once"]).exit_code == 78
