"""Safe on the Internet (issues 12 and 14): no open relay by address tricks, no mail loops,
no client holding every slot, no smuggling by bare CR, no forwarder held by a hostile relay.

Real receiver on loopback, real spool, real forwarder, raw sockets for the hostile servers.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers.receiver import running
from helpers.smtp_sink import Sink, free_port
from scanmail.admin.selfrelay import relay_to_self
from scanmail.cli.scan import main as scan_main
from scanmail.config import Config, load_config
from scanmail.fwd.bounded import MAX_REPLY_LINES
from scanmail.fwd.forwarder import Forwarder
from scanmail.fwd.transport import RelayDown, SmtpTransport
from scanmail.spool import Envelope, Spool, list_complete, read_spool_file

# The client (127.0.0.1) is NOT in RELAY_NETWORKS: it is the Internet here.
LOCAL = {"LOCAL_DOMAINS": "corp.example", "RELAY_NETWORKS": "192.0.2.0/24"}
MESSAGE = b"From: ann@ext.example\r\nTo: bob@corp.example\r\nSubject: hi\r\n\r\nhello\r\n"


def folder(config: Config, name: str) -> list[Path]:
    return list_complete(config.spool_dir / name)


def rcpt(smtp: smtplib.SMTP, path: str) -> tuple[int, str]:
    smtp.putcmd("RCPT TO:" + path)
    code, text = smtp.getreply()
    return code, text.decode()


# -- open relay ------------------------------------------------------------------------

REFUSED = [
    "<bob%evil.example@corp.example>",          # percent hack
    "<BOB%EVIL.EXAMPLE@CORP.EXAMPLE>",          # ... in upper case
    "<bob%evil.example@Corp.Example.>",         # ... with a trailing dot
    "<evil.example!bob@corp.example>",          # bang path
    "<Evil.Example!bob@CORP.example>",
    "<@corp.example:bob@evil.example>",         # source route to a foreign domain
    "<@corp.example,@corp.example:bob@corp.example>",  # source route, even to a local one
    '<"bob@evil.example"@corp.example>',        # quoted local part with an @
    '<"bob%evil.example"@corp.example>',        # quoted percent hack (unquoted by aiosmtpd)
    '<"bob"@corp.example>',                     # any quoted local part
    "<bob@corp.example@evil.example>",          # a second @
    "<bob@evil.example>",                       # plain foreign domain
    "<bob@EVIL.example>",                       # mixed case foreign domain
    "<bob@corp.example.>",                      # trailing dot: not the local domain
    "<bob@evil.example.>",
    "<bob@corp.example.evil.example>",
    "<bob@corp\u3002example>",                  # ideographic full stop: corp.example to IDNA
    "<bob@\uff43orp.example>",                  # fullwidth c: corp.example after NFKC
    "<bob@b\u00fccher.example>",                # a real IDN, but not local
    "<bob@xn--bcher-kva.example>",              # ... in its ASCII form
    "<bob@[127.0.0.1]>",                        # address literal
    "<bob\\@evil.example@corp.example>",        # quoted-pair @
]


@pytest.mark.parametrize("path", REFUSED)
def test_relay_tricks_refused_from_the_internet(write_env, path: str) -> None:
    config = load_config(write_env(**LOCAL))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo("client.example")
        assert smtp.mail("ann@ext.example", ["SMTPUTF8"] if not path.isascii() else [])[0] == 250
        code, text = rcpt(smtp, path)
        assert 500 <= code < 600, (path, code, text)
    assert folder(config, "incoming") == []


@pytest.mark.parametrize("path", ["<bob@corp.example>", "<Bob@CORP.Example>", "<postmaster>"])
def test_plain_local_recipients_still_accepted(write_env, path: str) -> None:
    config = load_config(write_env(**LOCAL))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo("client.example")
        smtp.mail("ann@ext.example")
        assert rcpt(smtp, path)[0] == 250


def test_trusted_network_may_still_use_any_form(write_env) -> None:
    config = load_config(write_env(LOCAL_DOMAINS="corp.example", RELAY_NETWORKS="127.0.0.0/8"))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo("client.example")
        smtp.mail("ann@corp.example")
        assert rcpt(smtp, "<bob%x@corp.example>")[0] == 250


# -- one client, every slot ------------------------------------------------------------


def test_per_client_connection_limit(write_env) -> None:
    config = load_config(write_env(MAX_CONNECTIONS="10", MAX_CONNECTIONS_PER_CLIENT="2", **LOCAL))
    with running(config) as port:
        first = smtplib.SMTP("127.0.0.1", port)
        second = smtplib.SMTP("127.0.0.1", port)
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", port)
        assert refused.value.smtp_code == 421
        assert b"from your address" in refused.value.smtp_error
        other = smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.2", 0))
        assert other.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE) == {}
        for smtp in (first, second, other):
            smtp.quit()
    assert len(folder(config, "incoming")) == 1


# -- mail loops --------------------------------------------------------------------------


def with_hops(count: int) -> bytes:
    trace = b"".join(b"Received: from hop%d by hop%d; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                     % (i, i + 1) for i in range(count))
    return trace + MESSAGE


def test_too_many_hops_refused_at_data(write_env) -> None:
    config = load_config(write_env(MAX_HOPS="5", **LOCAL))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], with_hops(4)) == {}
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("ann@ext.example", ["bob@corp.example"], with_hops(5))
        assert refused.value.smtp_code == 554
        assert refused.value.smtp_error.startswith(b"5.4.6")
        # A Received: line in the body is no hop.
        body = MESSAGE + b"Received: quoted in the body\r\n" * 10
        assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], body) == {}
    assert len(folder(config, "incoming")) == 2


def test_spooled_loop_is_failed_with_a_report(write_env) -> None:
    with Sink() as sink:
        config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port),
                                       MAX_HOPS="5"))
        spool = Spool(config.spool_dir)
        looped = spool.write("outgoing", Envelope("ann@ext.example", ("bob@corp.example",)),
                             [with_hops(6)])
        Forwarder(config).run_pass()
        assert not any(m.recipients == ["bob@corp.example"] for m in sink.messages)
    failed = folder(config, "failed")
    assert [p.name for p in failed] == [looped.name]
    reason = (config.spool_dir / "failed" / f"{looped.name}.reason").read_text()
    assert "5.4.6" in reason and "MAX_HOPS=5" in reason
    reports = [read_spool_file(p) for p in folder(config, "outgoing")]
    assert any(r.envelope.recipients == ("ann@ext.example",) and r.envelope.sender == ""
               for r in reports), "no delivery report to the sender"


def test_relay_to_self_stops_at_max_hops_and_loses_nothing(write_env) -> None:
    port = free_port()
    env = write_env(LOCAL_DOMAINS="corp.example", RELAY_HOST="127.0.0.1", RELAY_PORT=str(port),
                    LISTEN=f"127.0.0.1:{port}", MAX_HOPS="4")
    config = load_config(env)
    assert relay_to_self(config) is not None
    with running(config, port):
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail("ann@corp.example", ["bob@corp.example"], MESSAGE)
        forwarder = Forwarder(config)
        for _ in range(40):  # bounded: each round adds one Received:, MAX_HOPS ends it
            result = CliRunner().invoke(scan_main, ["--config", str(env), "--once"])
            assert result.exit_code == 0, result.output
            forwarder.run_pass(flush=True)
            if not folder(config, "incoming") and not folder(config, "outgoing"):
                break
        else:
            pytest.fail("the loop did not stop")
    failed = [read_spool_file(p) for p in folder(config, "failed")]
    originals = [m for m in failed if m.envelope.sender == "ann@corp.example"]
    assert len(originals) == 1
    assert b"Subject: hi" in originals[0].read_message()
    reason = (config.spool_dir / "failed" / f"{originals[0].qid}.reason").read_text()
    assert "554" in reason and "5.4.6" in reason


def test_check_warns_about_relay_to_self(write_env, tmp_path: Path) -> None:
    env = write_env(LISTEN="0.0.0.0:25", RELAY_HOST="localhost", RELAY_PORT="25")
    assert "own LISTEN" in (relay_to_self(load_config(env)) or "")
    result = CliRunner().invoke(scan_main, ["--config", str(env), "status"])
    assert "own LISTEN" in result.output and result.exit_code != 0
    eml = tmp_path / "a.eml"
    eml.write_bytes(MESSAGE)
    result = CliRunner().invoke(scan_main, ["--config", str(env), "check", str(eml)])
    assert "warning: RELAY_HOST:RELAY_PORT" in result.output and result.exit_code == 0
    fine = write_env(LISTEN="0.0.0.0:25", RELAY_HOST="127.0.0.1", RELAY_PORT="10025")
    assert relay_to_self(load_config(fine)) is None


# -- the forwarder against a hostile relay ---------------------------------------------------


def test_bare_cr_cannot_smuggle_a_second_message(write_env) -> None:
    smuggle = (b"From: ann@ext.example\r\nTo: bob@corp.example\r\nSubject: one\r\n\r\n"
               b"body\r.\rMAIL FROM:<evil@ext.example>\rRCPT TO:<victim@corp.example>\r"
               b"DATA\r\rSubject: two\r.\rbare\rcr\r\n.\r\n")
    with Sink() as sink:
        config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port)))
        Spool(config.spool_dir).write(
            "outgoing", Envelope("ann@ext.example", ("bob@corp.example",)), [smuggle])
        Forwarder(config).run_pass()
        assert len(sink.messages) == 1
        content = sink.messages[0].content
    assert b"\r" not in content.replace(b"\r\n", b""), "a bare CR reached the relay"
    # The dot a bare CR made into a line of its own was dot-stuffed on the wire: the relay
    # saw it as a line of the one message (aiosmtpd undid the stuffing), not as its end.
    assert b"body\r\n.\r\nMAIL FROM:<evil@ext.example>\r\n" in content
    assert not any(m.recipients == ["victim@corp.example"] for m in sink.messages)


class Hostile:
    """A raw TCP server that greets, then answers EHLO as `behaviour` says."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                self.talk(conn)

    def talk(self, conn: socket.socket) -> None:
        conn.sendall(b"220 hostile ESMTP\r\n")
        conn.recv(1024)  # EHLO
        if self.behaviour == "endless":
            line = b"250-" + b"x" * 60 + b"\r\n"
            while not self.stop.is_set() and self.sent < 10_000_000:
                conn.sendall(line * 100)
                self.sent += len(line) * 100
        else:  # trickle: one byte every 0.2 s, never a full reply
            conn.sendall(b"250 ok\r\n")
            conn.recv(1024)  # MAIL FROM
            while not self.stop.is_set():
                conn.sendall(b"2")
                self.sent += 1
                time.sleep(0.2)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.sock.close()


def deliver_in_thread(config: Config) -> list[object]:
    spool = Spool(config.spool_dir)
    path = spool.write("outgoing", Envelope("ann@ext.example", ("bob@corp.example",)), [MESSAGE])
    message = read_spool_file(path)
    result: list[object] = []

    def run() -> None:
        transport = SmtpTransport(config)
        try:
            result.append(transport.deliver(message, ["bob@corp.example"]))
        except RelayDown as exc:  # the greeting or EHLO failed
            result.append(exc)
        finally:
            transport.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the forwarder is held by the relay"
    return result


def test_endless_multiline_reply_is_cut(write_env) -> None:
    hostile = Hostile("endless")
    try:
        config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(hostile.port)))
        result = deliver_in_thread(config)
    finally:
        hostile.close()
    assert "longer than" in str(result[0]) and str(MAX_REPLY_LINES) in str(result[0])
    assert hostile.sent < 10_000_000  # it stopped reading long before the server gave up


def test_trickling_relay_is_given_up_at_the_deadline(write_env) -> None:
    hostile = Hostile("trickle")
    try:
        config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(hostile.port),
                                       SMTP_TIMEOUT="30", FWD_DEADLINE="2"))
        result = deliver_in_thread(config)
    finally:
        hostile.close()
    attempt = result[0]
    deferred = getattr(attempt, "deferred", {})
    assert "bob@corp.example" in deferred, attempt
    assert "deadline" in str(deferred["bob@corp.example"])
