"""What the pass tells people: the admin's alert for a quarantined message, the sender's notice."""

from __future__ import annotations

import time

from scanmail import notify, quarantine
from scanmail.config import Config
from scanmail.digest import Digest
from scanmail.spool import Spool
from scanmail.untrusted import one_line


def alert_text(record: quarantine.Record) -> tuple[str, str]:
    """Subject and body of the admin alert; every value from the message on one clean line."""
    def one(value: str, limit: int = 300) -> str:
        return one_line(value, limit)

    what = record.what if record.viruses or record.reason == "banned" else record.reason
    subject = one(f"{record.reason}: {what or record.reason} from <{record.sender}>", 200)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(record.time))
    lines = [
        f"Time:        {stamp}",
        f"Spool file:  {record.qid}",
        f"From:        <{one(record.sender)}>",
        f"To:          {one(', '.join(f'<{r}>' for r in record.recipients), 1000)}",
        f"Subject:     {one(record.subject)}",
        f"Reason:      {record.reason}",
    ]
    if record.viruses:
        lines.append(f"Virus:       {one(', '.join(record.viruses))}")
    if record.detail:
        lines.append(f"Detail:      {one(record.detail, 500)}")
    if record.attachments:
        lines.append(f"Attachments: {one(', '.join(record.attachments[:20]), 1000)}")
    lines += [
        "",
        f"The message is kept in quarantine as {record.qid}.",
        f"To look at it:  scanmail quarantine show {record.qid}",
        f"To release it:  scanmail quarantine release {record.qid}",
    ]
    return subject, "\n".join(lines) + "\n"


def alert_admin(digest: Digest, record: quarantine.Record) -> None:
    """The admin's alert for one quarantined message: at once, or held for a digest."""
    line = (f"{record.qid}  {record.what or '-'}  from <{record.sender}>  "
            f"to {', '.join(record.recipients[:3])}")
    digest.alert(record.reason, *alert_text(record), line=line)


def notify_sender(config: Config, spool: Spool, record: quarantine.Record) -> None:
    """The courteous notice to the sender of an infected message (NOTIFY_SENDER=yes)."""
    text = (
        "A message you sent could not be delivered because it carries a virus.\n\n"
        f"  To:       {one_line(', '.join(record.recipients), 1000)}\n"
        f"  Subject:  {one_line(record.subject, 300)}\n"
        f"  Virus:    {one_line(', '.join(record.viruses), 300)}\n\n"
        "Your computer may be infected: please check it with an up-to-date virus\n"
        "scanner. The message has been kept by the mail administrator.\n"
    )
    msg = notify.build_message(config, [record.sender], "Virus found in a message you sent", text)
    notify.enqueue(spool, msg, [record.sender])
