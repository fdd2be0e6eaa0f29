"""DSN parameters and XFORWARD at the receiver and in the forwarder (issue 12), without
Postfix: real receiver on loopback, real spool, real forwarder, aiosmtpd sink as relay."""

from __future__ import annotations

import smtplib

from helpers.receiver import running
from helpers.smtp_sink import Sink
from scanmail import dsnparams
from scanmail.config import load_config
from scanmail.fwd.forwarder import Forwarder
from scanmail.spool import Envelope, Spool, list_complete, read_spool_file

MESSAGE = b"From: ann@ext.example\r\nTo: bob@corp.example\r\nSubject: hi\r\n\r\nhello\r\n"


def test_dsn_parameters_kept_beside_the_spool_file(write_env) -> None:
    config = load_config(write_env(LOCAL_DOMAINS="corp.example", RELAY_NETWORKS="192.0.2.0/24"))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("dsn") and smtp.has_extn("enhancedstatuscodes")
        assert not smtp.has_extn("xforward")  # not for a client outside RELAY_NETWORKS
        assert smtp.docmd("XFORWARD ADDR=192.0.2.9")[0] == 550
        assert smtp.mail("ann@ext.example", ["RET=HDRS", "ENVID=QQ+2Bid"])[0] == 250
        assert smtp.rcpt("bob@corp.example", ["NOTIFY=SUCCESS,FAILURE",
                                              "ORCPT=rfc822;Bob+40corp.example"])[0] == 250
        assert smtp.rcpt("carol@corp.example", ["NOTIFY=NEVER"])[0] == 250
        assert smtp.rcpt("dave@corp.example", ["NOTIFY=BOGUS"])[0] == 501
        assert smtp.rcpt("erin@corp.example", ["ORCPT=nosemicolon"])[0] == 501
        code, _ = smtp.data(MESSAGE)
        assert code == 250
    [path] = list_complete(config.spool_dir / "incoming")
    spooled = read_spool_file(path)
    # The Obtuse envelope is unchanged: FROM/RCPT lines with bare addresses.
    assert path.read_bytes().startswith(
        b"FROM <ann@ext.example>\nRCPT <bob@corp.example>\nRCPT <carol@corp.example>\nBODY\n")
    params = dsnparams.load(config.var_dir, spooled.qid)
    assert (params.ret, params.envid) == ("HDRS", "QQ+2Bid")
    assert params.rcpt("bob@corp.example").notify == ("SUCCESS", "FAILURE")
    assert params.rcpt("bob@corp.example").orcpt == "rfc822;Bob+40corp.example"
    assert not params.rcpt("carol@corp.example").wants("FAILURE")


def test_bounces_honour_notify_orcpt_and_envid(write_env) -> None:
    with Sink() as sink:
        for rcpt in ("bob@corp.example", "carol@corp.example"):
            sink.handler.rcpt_replies[rcpt] = ["550 5.1.1 User unknown"]
        config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port)))
        spool = Spool(config.spool_dir)
        qid = spool.new_qid()
        dsnparams.save(config.var_dir, qid, dsnparams.DsnParams(
            ret="HDRS", envid="ENV+2D1", rcpts={
                "bob@corp.example": dsnparams.RcptParams(("FAILURE",), "rfc822;b+40corp.example"),
                "carol@corp.example": dsnparams.RcptParams(("NEVER",), None),
            }))
        spool.write("outgoing", Envelope("ann@ext.example",
                                         ("bob@corp.example", "carol@corp.example")),
                    [MESSAGE], qid)
        Forwarder(config).run_pass()
        Forwarder(config).run_pass()  # the report just written
    reports = [m for m in sink.messages if m.recipients == ["ann@ext.example"]]
    assert len(reports) == 1
    text = reports[0].content.decode()
    assert "Original-Envelope-Id: ENV-1" in text
    assert "Original-Recipient: rfc822; b@corp.example" in text
    assert "Final-Recipient: rfc822; bob@corp.example" in text
    assert "carol@corp.example" not in text.split("Content-Type: text/rfc822-headers")[0]
    assert not (config.var_dir / "dsn" / f"{qid}.json").exists()


def test_xforward_from_a_trusted_mta_names_the_original_client(write_env) -> None:
    config = load_config(write_env(LOCAL_DOMAINS="corp.example", RELAY_NETWORKS="127.0.0.0/8"))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo("postfix.corp.example")
        assert "NAME ADDR" in smtp.esmtp_features["xforward"]
        assert smtp.docmd("XFORWARD NAME=mx.ext.example ADDR=192.0.2.7 PROTO=ESMTP")[0] == 250
        assert smtp.docmd("XFORWARD HELO=helo.ext.example SOURCE=REMOTE")[0] == 250
        assert smtp.docmd("XFORWARD BOGUS=1")[0] == 501
        assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE) == {}
        # The next transaction has no XFORWARD: it names the MTA itself.
        assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE) == {}
    headers = sorted(read_spool_file(p).read_message().split(b"\r\n", 1)[0]
                     for p in list_complete(config.spool_dir / "incoming"))
    assert headers == sorted([
        b"Received: from helo.ext.example (mx.ext.example [192.0.2.7]) "
        b"(via postfix.corp.example [127.0.0.1])",
        b"Received: from postfix.corp.example ([127.0.0.1])",
    ])


def test_relayed_notice_when_the_relay_has_no_dsn(write_env) -> None:
    with Sink() as sink:  # aiosmtpd: no DSN extension
        config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port)))
        spool = Spool(config.spool_dir)
        qid = spool.new_qid()
        dsnparams.save(config.var_dir, qid, dsnparams.DsnParams(envid="E1", rcpts={
            "bob@corp.example": dsnparams.RcptParams(("SUCCESS",), None)}))
        spool.write("outgoing", Envelope("ann@ext.example",
                                         ("bob@corp.example", "carol@corp.example")),
                    [MESSAGE], qid)
        Forwarder(config).run_pass()
        Forwarder(config).run_pass()
    notices = [m for m in sink.messages if m.recipients == ["ann@ext.example"]]
    assert len(notices) == 1
    text = notices[0].content.decode()
    assert "Action: relayed" in text and "Status: 2.0.0" in text
    assert "Final-Recipient: rfc822; bob@corp.example" in text
    assert "Final-Recipient: rfc822; carol@corp.example" not in text  # asked for nothing
    assert "Original-Envelope-Id: E1" in text
