"""The delivery line: where a message went, what the relay said to each recipient and to
the data, and the relay's own queue id for it.

A delivery event used to say only "sent=1": to follow a message into the internal
server's log the admin had nothing to grep for. The reply to the data names the relay's
queue id (Postfix "250 2.0.0 Ok: queued as 4ABC123", Exim "250 OK id=1qXyZ-0001Ab-Cd",
others "queued as X"), so the line carries it as remote_id=, first, beside the relay.
Every reply comes from the relay and is shown through untrusted.one_line, bounded, so
a hostile server cannot forge or flood the line.
"""

from __future__ import annotations

import re

from scanmail.fwd.transport import Attempt, Reply
from scanmail.untrusted import one_line

REPLY_MAX = 120  # characters of one reply shown
ADDRESS_MAX = 80
RCPTS_SHOWN = 10  # recipients listed one by one; the rest are counted

# The relay's id for the message in its reply to the data. Postfix and the generic form
# ("queued as X", "Queued as X"); Exim ("id=X"). An id is a token of letters, digits and
# the separators these MTAs use, never a whole sentence.
_QUEUE_ID = (
    re.compile(r"\bqueued as:? <?([A-Za-z0-9][A-Za-z0-9._@-]{2,63})", re.IGNORECASE),
    re.compile(r"\bid=<?([A-Za-z0-9][A-Za-z0-9._@-]{2,63})"),
)


def queue_id(reply: Reply | None) -> str:
    """The relay's queue id in a successful reply to the data; '' if it names none."""
    if reply is None or not reply.is_ok:
        return ""
    for pattern in _QUEUE_ID:
        match = pattern.search(reply.text)
        if match:
            return one_line(match.group(1).rstrip(".>"), 64)
    return ""


def _reply(reply: Reply) -> str:
    return one_line(str(reply), REPLY_MAX)


def recipient_replies(attempt: Attempt) -> list[tuple[str, str]]:
    """Each recipient tried, in order, with what the relay answered it.

    Its reply to RCPT TO when there was one (accepted or refused); else the reply that
    decided its fate (a refused MAIL FROM, a lost connection); else, for a local MTA that
    answers for all at once, "accepted".
    """
    outcome = {**attempt.failed, **attempt.deferred}
    order = dict.fromkeys([*attempt.replies, *attempt.delivered, *outcome])
    found = []
    for rcpt in order:
        reply = attempt.replies.get(rcpt) or outcome.get(rcpt)
        found.append((rcpt, _reply(reply) if reply is not None else "accepted"))
    return found


def account(attempt: Attempt) -> str:
    """The delivery event's detail: relay=, remote_id=, each recipient's reply, the data's.

    relay=127.0.0.1:25 remote_id=4ABC123 <a@corp.example>: 250 2.1.5 Ok;
    <b@corp.example>: 550 5.1.1 no such user; data: 250 2.0.0 Ok: queued as 4ABC123
    """
    head = []
    if attempt.relay:
        head.append(f"relay={one_line(attempt.relay, ADDRESS_MAX)}")
    remote = queue_id(attempt.data)
    if remote:
        head.append(f"remote_id={remote}")
    replies = recipient_replies(attempt)
    items = [f"<{one_line(rcpt, ADDRESS_MAX)}>: {text}" for rcpt, text in replies[:RCPTS_SHOWN]]
    if len(replies) > RCPTS_SHOWN:
        items.append(f"and {len(replies) - RCPTS_SHOWN} more recipients")
    if attempt.data is not None:
        items.append(f"data: {_reply(attempt.data)}")
    return " ".join([*head, "; ".join(items)]).strip()
