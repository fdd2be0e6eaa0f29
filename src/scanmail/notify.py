"""Notifications: builds alert and notice messages and queues them in outgoing.

There is no local MTA on the gateway (the seed's `sendmail -q` dance): a notification is a
spool file written straight into outgoing, and the forwarder delivers it like any mail.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from scanmail.config import Config
from scanmail.spool import Envelope, Spool

_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain(text: str) -> str:
    """Untrusted text made safe for a notification body: no control characters, no raw bytes."""
    return _UNSAFE.sub("?", text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def build_message(
    config: Config,
    to: Iterable[str],
    subject: str,
    text: str,
    html: str | None = None,
    auto: bool = True,
) -> EmailMessage:
    """A notification from the gateway: plain text, or text and HTML alternatives."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = config.alert_from
    msg["To"] = ", ".join(to)
    msg["Subject"] = plain(subject).replace("\n", " ")[:200]
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=config.hostname or None)
    if auto:
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    msg.set_content(plain(text))
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


def enqueue(spool: Spool, msg: EmailMessage, recipients: Iterable[str], sender: str = "") -> Path:
    """Write a message as a complete spool file into outgoing; the null sender by default."""
    envelope = Envelope(sender=sender, recipients=tuple(recipients))
    return spool.write("outgoing", envelope, [msg.as_bytes()])


def alert_admin(config: Config, spool: Spool, subject: str, text: str) -> Path:
    """Queue an alert for ADMIN_EMAIL."""
    msg = build_message(config, [config.admin_email], f"[scanmail] {subject}", text)
    return enqueue(spool, msg, [config.admin_email])
