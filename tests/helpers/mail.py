"""Messages for tests: built with the email package, written into a spool's incoming."""

from __future__ import annotations

import base64
import binascii
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from scanmail.spool import Envelope, Spool

SENDER = "alice@outside.example"
RCPT = "bob@corp.example"


def message(
    subject: str = "hello",
    body: str = "Just text.\n",
    attachments: list[tuple[str | None, bytes]] | None = None,
    sender: str = SENDER,
) -> bytes:
    """A multipart message with base64 attachments (name None: no name at all)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = RCPT
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash(subject))}@outside.example>"
    msg.set_content(body)
    for name, data in attachments or []:
        if name is None:
            msg.add_attachment(data, maintype="application", subtype="octet-stream")
            del msg.get_payload()[-1]["Content-Disposition"]
        else:
            msg.add_attachment(data, maintype="application", subtype="octet-stream",
                               filename=name)
    return msg.as_bytes()


def raw_message(part_headers: str, payload: bytes, encoding: str = "base64",
                subject: str = "raw") -> bytes:
    """A two-part message whose second part has exactly the headers given."""
    if encoding == "base64":
        body = base64.encodebytes(payload)
    elif encoding == "quoted-printable":
        # b2a_qp picks CRLF soft breaks when the data holds CRLF; make them all LF first.
        body = binascii.b2a_qp(payload, quotetabs=True, istext=False).replace(b"\r\n", b"\n")
    else:
        body = payload
    return (
        f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
        "--b0\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        f"--b0\r\n{part_headers}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode() + body.replace(b"\n", b"\r\n") + b"\r\n--b0--\r\n"


def nested(inner: bytes, subject: str = "forwarded") -> bytes:
    """inner attached as a message/rfc822 part of another message."""
    return (
        f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        "--outer\r\nContent-Type: text/plain\r\n\r\nforwarding this\r\n"
        "--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    ).encode() + inner + b"\r\n--outer--\r\n"


def enqueue(root: Path, data: bytes, sender: str = SENDER, rcpts: tuple[str, ...] = (RCPT,)
            ) -> Path:
    """Write data into incoming as a complete spool file, as the receiver would."""
    return Spool(root).write("incoming", Envelope(sender, rcpts), [data])


def folder_of(root: Path, qid: str) -> list[str]:
    """The message folders holding a spool file of that name."""
    return [name for name in ("incoming", "outgoing", "quarantine", "failed")
            if (root / name / qid).is_file()]
