"""scanmail beside a real Postfix (issue 12): Debian's postfix, a private instance per test
(own config, queue and log under /tmp, loopback ports, stopped by PID; see
postfix_instance.py), the real receiver, a real `scanmail --once` pass with the private
clamd, the real forwarder, and an aiosmtpd sink as the final mailbox server.

Needs root (Postfix's daemons drop to the postfix user) and /usr/sbin/postfix:
`scripts/install-deps` installs it without touching the system's own instance.
"""

from __future__ import annotations

import email
import re
import smtplib
import time
from collections.abc import Iterator
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers.events import recorded
from helpers.mail import message
from helpers.postfix_instance import (
    AfterQueueFilter,
    PostfixConfig,
    PostfixInstance,
    free_ports,
    postfix_available,
)
from helpers.receiver import running
from helpers.smtp_sink import Sink
from scanmail import quarantine
from scanmail.cli.scan import main as scan_main
from scanmail.config import Config, load_config
from scanmail.fwd.forwarder import Forwarder
from scanmail.spool import Spool, list_complete
from scanmail.testing import eicar

pytestmark = pytest.mark.skipif(
    not postfix_available(),
    reason="needs root and Debian's postfix (/usr/sbin/postfix): run scripts/install-deps as root",
)

SENDER = "ann@ext.example"
BOB = "bob@corp.example"


def scan_and_forward(env: Path, config: Config) -> None:
    result = CliRunner().invoke(scan_main, ["--config", str(env), "--once"])
    assert result.exit_code == 0, result.output
    Forwarder(config).run_pass(flush=True)


def wait_until(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def send(port: int, rcpts: list[str], data: bytes, source: str = "127.0.0.2",
         helo: str = "origin.client.example", **options: list[str]) -> dict[str, object]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo,
                      source_address=(source, 0)) as smtp:
        return dict(smtp.sendmail(SENDER, rcpts, data, **options))  # type: ignore[arg-type]


class AfterQueue:
    """Postfix with content_filter=scan:[127.0.0.1]:F, scanmail on F, re-entry on R."""

    def __init__(self, write_env: object, sink: Sink) -> None:
        self.smtpd_port, self.filter_port, self.reentry_port = free_ports(3)
        self.postfix = PostfixInstance(PostfixConfig(
            smtpd_port=self.smtpd_port, sink_port=sink.port,
            relay_domains=("corp.example",),
            content_filter=AfterQueueFilter(self.filter_port, self.reentry_port),
            extra_main={"minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
                        "queue_run_delay": "1s"},
        ))
        self.env = write_env(  # type: ignore[operator]
            LISTEN=f"127.0.0.1:{self.filter_port}", RELAY_NETWORKS="127.0.0.0/8",
            LOCAL_DOMAINS="corp.example", RELAY_HOST="127.0.0.1",
            RELAY_PORT=str(self.reentry_port), RECIPIENT_VERIFY="no",
        )
        self.config = load_config(self.env)


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as running:
        yield running


def test_after_queue_filter_clean_infected_banned_and_xforward(write_env, sink: Sink) -> None:
    setup = AfterQueue(write_env, sink)
    clean = message("minutes", "The minutes are attached.\n", [("minutes.pdf", b"%PDF-1.4 x")])
    banned = message("invoice", "Please pay.\n", [("invoice.pdf.exe", b"MZ not really")])
    infected = message("notes", "See the notes.\n", [("notes.txt", eicar())])
    spool_root = setup.config.spool_dir
    with setup.postfix as postfix, running(setup.config, setup.filter_port):
        for data in (clean, banned, infected):
            assert send(setup.smtpd_port, [BOB], data) == {}
        postfix.wait_for_log(r"/scan/smtp\[\d+\]: .*status=sent .*queued as smtpd", count=3)
        wait_until(lambda: len(list_complete(spool_root / "incoming")) == 3, "3 in incoming")
        scan_and_forward(setup.env, setup.config)
        postfix.wait_for_delivery("sent", to=BOB, relay=f"127.0.0.1[127.0.0.1]:{sink.port}")
        wait_until(lambda: any(m.recipients == [BOB] for m in sink.messages), "delivery")
        log = postfix.log_text()
    to_bob = [m for m in sink.messages if m.recipients == [BOB]]
    assert len(to_bob) == 1
    got = email.message_from_bytes(to_bob[0].content, policy=policy.default)
    assert got["Subject"] == "minutes" and got["X-Virus-Scanned"]
    spool = Spool(spool_root)
    reasons = sorted(quarantine.read_record(spool, q).reason for q in quarantine.list_ids(spool))
    assert reasons == ["banned", "infected"]
    # XFORWARD: the re-entry smtpd logs the original client and HELO, not scanmail's.
    reentry = [line for line in log.splitlines() if "/reentry/smtpd[" in line and "client=" in line]
    assert reentry, log
    assert any("[127.0.0.2]" in line for line in reentry), (reentry, str(got.get_all("Received")))
    # scanmail's own Received: names the original client too.
    received = [v for k, v in got.items() if k.lower() == "received"]
    assert any("origin.client.example" in str(v) and "127.0.0.2" in str(v) and "scanmail" in str(v)
               for v in received), received
    # One message across both logs: Postfix's filter line names scanmail's id ("queued as
    # smtpd..."), scanmail's delivery line names Postfix's re-entry id (remote_id=4Xyz).
    delivered = [e.detail for e in recorded(setup.config.var_dir, "delivery")
                 if e.verdict == "delivered" and BOB in e.recipients]
    ids = [m.group(1) for line in delivered if (m := re.search(r"remote_id=([0-9A-F]+) ", line))]
    assert ids, delivered
    assert all(f"queued as {qid}" in line for qid, line in zip(ids, delivered, strict=True))
    assert any(f"{qid}: to=<{BOB}>" in log and "status=sent" in log for qid in ids)


def test_scanmail_down_postfix_defers_then_delivers(write_env, sink: Sink) -> None:
    setup = AfterQueue(write_env, sink)
    spool_root = setup.config.spool_dir
    with setup.postfix as postfix:
        assert send(setup.smtpd_port, [BOB], message("later", "hi\n", [])) == {}
        deferred = postfix.wait_for_delivery("deferred", to=BOB)
        assert f"127.0.0.1]:{setup.filter_port}" in deferred.line or "refused" in deferred.line
        assert not postfix.queue_is_empty()
        with running(setup.config, setup.filter_port):
            postfix.flush()
            wait_until(lambda: len(list_complete(spool_root / "incoming")) == 1,
                       "the deferred message in incoming")
            scan_and_forward(setup.env, setup.config)
            postfix.wait_for_delivery("sent", to=BOB, relay=f"[127.0.0.1]:{sink.port}")
        wait_until(postfix.queue_is_empty, "an empty Postfix queue")
    assert [m.recipients for m in sink.messages] == [[BOB]]


def test_unknown_recipient_refused_at_rcpt_in_front_of_postfix(write_env, sink: Sink) -> None:
    (smtpd_port, gateway_port) = free_ports(2)
    instance = PostfixInstance(PostfixConfig(
        smtpd_port=smtpd_port, sink_port=sink.port, relay_domains=("corp.example",),
        relay_recipients=(BOB,),
    ))
    env = write_env(LOCAL_DOMAINS="corp.example", RELAY_NETWORKS="192.0.2.0/24",
                    RELAY_HOST="127.0.0.1", RELAY_PORT=str(smtpd_port),
                    RECIPIENT_VERIFY="auto")
    config = load_config(env)
    with instance, running(config, gateway_port):
        with smtplib.SMTP("127.0.0.1", gateway_port) as smtp:
            smtp.ehlo("client.example")
            smtp.mail(SENDER)
            code, text = smtp.rcpt("nobody@corp.example")
            assert code == 550 and text.startswith(b"5.1.1"), text
            assert smtp.rcpt(BOB)[0] == 250
        # The probe never queued anything in Postfix, and nobody gets a bounce later.
        assert instance.queue_is_empty()
    assert list_complete(config.spool_dir / "incoming") == []


def test_notify_success_gives_postfixs_success_dsn_from_the_last_hop(write_env, sink: Sink) -> None:
    setup = AfterQueue(write_env, sink)
    spool_root = setup.config.spool_dir
    with setup.postfix as postfix, running(setup.config, setup.filter_port):
        assert send(setup.smtpd_port, [BOB], message("receipt", "hi\n", []),
                    mail_options=["ENVID=envid-4711", "RET=HDRS"],
                    rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;bob@corp.example"]) == {}
        wait_until(lambda: len(list_complete(spool_root / "incoming")) == 1, "the message")
        assert (spool_root / "var" / "dsn").is_dir()  # the sidecar kept NOTIFY and ENVID
        scan_and_forward(setup.env, setup.config)
        wait_until(lambda: any(m.recipients == [SENDER] for m in sink.messages), "the DSN",
                   timeout=60)
        log = postfix.log_text()
    notices = [m for m in sink.messages if m.recipients == [SENDER]]
    assert len(notices) == 1, log  # one notice: from the last hop, not a "relayed" by the first
    text = notices[0].content.decode("utf-8", "replace")
    assert notices[0].sender in ("", "<>")
    assert "report-type=delivery-status" in text
    assert "Original-Envelope-Id: envid-4711" in text
    assert f"127.0.0.1[127.0.0.1]:{sink.port}" in text or "relayed" in text
    assert "queued as smtpd" not in text  # not the first hop's notice about scanmail
    assert [m.recipients for m in sink.messages if m.recipients == [BOB]] == [[BOB]]
    assert not list((spool_root / "var" / "dsn").iterdir())  # dropped once delivered
