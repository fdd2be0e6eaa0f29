"""Undeliverable mail: the DSN to its sender, the file parked in failed/, the admin told."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from scanmail import dsnparams, durable, notify
from scanmail.config import Config
from scanmail.errors import SpoolError
from scanmail.fwd.dsn import MAX_HEADERS, Failure, build_dsn
from scanmail.fwd.transport import Reply
from scanmail.spool import Envelope, Spool, SpoolFile
from scanmail.untrusted import one_line


def send_dsn(
    config: Config,
    spool: Spool,
    message: SpoolFile,
    failed: Mapping[str, Reply],
    remote: str,
    arrival: float,
) -> Path | None:
    """Queue a delivery status notification to the sender; never to the null sender."""
    sender = message.envelope.sender
    if not sender:
        return None
    params = dsnparams.load(config.var_dir, message.qid)
    # RFC 3461: NOTIFY=NEVER, or a NOTIFY without FAILURE, means no report for that one.
    failures = [Failure(rcpt, str(reply), remote) for rcpt, reply in failed.items()
                if params.rcpt(rcpt).wants("FAILURE")]
    if not failures:
        return None
    with message.open_message() as handle:
        head = handle.read(MAX_HEADERS)
    orcpts = {f.recipient: params.rcpt(f.recipient).orcpt or "" for f in failures}
    dsn = build_dsn(
        config.hostname, config.alert_from, sender, message.qid, failures, head, arrival=arrival,
        envid=params.envid, orcpts=orcpts,
    )
    return spool.write("outgoing", Envelope("", (sender,)), [dsn])


def send_relayed(
    config: Config,
    spool: Spool,
    message: SpoolFile,
    delivered: Sequence[str],
    reply: Reply,
    remote: str,
    arrival: float,
) -> Path | None:
    """A "relayed" notice (RFC 3461 4.1) for recipients that asked NOTIFY=SUCCESS when the
    relay does not offer DSN and so cannot send the success notice itself."""
    sender = message.envelope.sender
    if not sender:
        return None
    params = dsnparams.load(config.var_dir, message.qid)
    wanted = [r for r in delivered if params.rcpt(r).wants("SUCCESS")]
    if not wanted:
        return None
    with message.open_message() as handle:
        head = handle.read(MAX_HEADERS)
    notices = [Failure(rcpt, str(reply), remote) for rcpt in wanted]
    orcpts = {rcpt: params.rcpt(rcpt).orcpt or "" for rcpt in wanted}
    dsn = build_dsn(
        config.hostname, config.alert_from, sender, message.qid, notices, head, arrival=arrival,
        envid=params.envid, orcpts=orcpts, action="relayed",
    )
    return spool.write("outgoing", Envelope("", (sender,)), [dsn])


def park(spool: Spool, path: Path, lines: Sequence[str], now: float) -> Path:
    """Move a spool file to failed/ and write why beside it; the new path."""
    moved = spool.move(path, "failed")
    write_reason(moved, lines, now)
    return moved


def write_reason(parked: Path, lines: Sequence[str], now: float) -> None:
    """failed/<qid>.reason: plain text beside the file (mode 0640: not a spool file)."""
    target = parked.with_name(parked.name + ".reason")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(now))
    try:
        durable.write_text(target, f"{stamp}\n" + "".join(f"{line}\n" for line in lines), 0o640)
    except OSError as exc:
        raise SpoolError(f"{target}: cannot write: {exc.strerror}") from exc


def alert_undeliverable(
    config: Config,
    spool: Spool,
    message: SpoolFile,
    parked: Path,
    lines: Sequence[str],
    delivered: Sequence[str],
) -> Path:
    """Tell the admin a message with failed recipients was parked, and how to retry it."""
    text = "\n".join([
        f"The message {message.qid} from <{message.envelope.sender}> could not be delivered to:",
        "",
        *(f"  {one_line(line, 400)}" for line in lines),
        "",
        f"Delivered to: {', '.join(delivered) or '(none in the last attempt)'}",
        "The sender was sent a delivery status notification.",
        f"The message is kept in {parked}; move it back to outgoing to retry",
        "the failed recipients (those already delivered are marked SENT).",
    ])
    return notify.alert_admin(config, spool, f"undeliverable message {message.qid}", text)


def alert_malformed(config: Config, spool: Spool, name: str, parked: Path, reason: str) -> Path:
    """Tell the admin a file in outgoing had no readable envelope and was parked."""
    return notify.alert_admin(
        config, spool, f"malformed spool file {name}",
        f"{name} in outgoing has no readable envelope ({reason}).\n"
        f"It was moved to {parked} and not delivered.",
    )


def alert_unreadable(config: Config, spool: Spool, path: Path) -> Path:
    """Tell the admin a file in outgoing cannot be read by the forwarder's user."""
    return notify.alert_admin(
        config, spool, f"unreadable spool file {path.name}",
        f"{path} cannot be read by the forwarder (permission denied), so it is not\n"
        "delivered. It was probably written by a command run as root. Give it to the\n"
        f"spool's owner: chown --reference={path.parent} {path}\n"
        "It stays in outgoing and goes out on the next pass after that.",
    )
