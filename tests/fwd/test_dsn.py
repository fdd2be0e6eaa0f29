"""fwd/dsn: the delivery status notification (RFC 3464, RFC 6533 for UTF-8 addresses)."""

from __future__ import annotations

import pytest

from helpers.outgoing import parse_mail as parse
from scanmail.fwd.dsn import Failure, build_dsn, header_block


def test_dsn_for_utf8_addresses_uses_the_global_types() -> None:
    report = parse(build_dsn(
        "gw.corp.example", "MAILER-DAEMON@gw.corp.example", "søren@ext.example", "smtpd1",
        [Failure("jörg@corp.example", "550 5.1.1 unknown", "relay")],
        "Subject: grüße\r\nFrom: søren@ext.example\r\n\r\nbody\r\n".encode(),
    ))
    _, status, headers = report.iter_parts()
    assert status.get_content_type() == "message/global-delivery-status"
    assert headers.get_content_type() == "message/global-headers"
    assert b"body" not in report.as_bytes()


@pytest.mark.parametrize(
    ("reply", "status"),
    [("550 5.1.1 no", "5.1.1"), ("554 rejected", "5.0.0"), ("451 4.4.7 expired", "4.4.7"),
     ("553 see RFC 5.6.7 below", "5.0.0"), ("550 4.1.1 odd", "5.0.0")],
)
def test_dsn_status_codes(reply: str, status: str) -> None:
    assert Failure("a@b", reply).status == status


def test_header_block() -> None:
    assert header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == b"A: 1\r\nB: 2\r\n"
    assert header_block(b"A: 1\n\nbody\n") == b"A: 1\n"
    assert header_block(b"A: 1\r\n") == b"A: 1\r\n"
