"""The daysumm report as plain text that reads well in an 80-column terminal."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence

from scanmail.daysumm.model import Blocked, Folder, Report, Tally
from scanmail.humanize import duration, moment, number, plural, size

WIDTH = 80
BAR = 44
BLOCKED = 20  # quarantined messages listed; the page lists more
JUMP = "<<"

# (DayCounts field, label, indent): the figures compared with the previous 7 days.
FIGURES = (
    ("received", "Messages received", 0),
    ("delivered", "delivered clean", 2),
    ("quarantined", "quarantined", 2),
    ("banned", "banned attachment", 4),
    ("infected", "infected", 4),
    ("encrypted", "encrypted archive", 4),
    ("unchecked", "unchecked (too big to decode)", 4),
    ("malformed", "malformed", 4),
    ("retried", "left for retry", 2),
    ("released", "Released by the admin", 0),
    ("deleted", "Deleted by the admin", 0),
    ("forwarded", "Forwarded to the mail server", 0),
    ("deferred", "deferred (tries)", 2),
    ("failed", "failed", 2),
    ("bounces", "Bounces (DSNs) sent", 0),
)


def fit(text: str, width: int) -> str:
    """Cut text to a column width."""
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def render_text(report: Report) -> str:
    """The whole report as text, lines of at most WIDTH columns."""
    sections = (
        _title(report),
        _figures(report),
        _tallies("Viruses found", report.viruses, report.counts.infected, "infected message"),
        _tallies("Top senders of blocked mail", report.senders),
        _tallies("Top recipients of blocked mail", report.recipients),
        _tallies("Attachment names in blocked mail", report.attachments),
        _tallies("Delivery failures by reply", report.failures),
        _hours(report.hours),
        _scanner(report),
        _backlog(report),
        _blocked(report),
    )
    lines = [line.rstrip() for section in sections for line in section]
    return "\n".join(lines).rstrip() + "\n"


def _title(report: Report) -> Iterator[str]:
    title = f"scanmail daily report for {report.day:%A %d %B %Y}"
    yield fit(f"{title}, {report.host}", WIDTH)
    yield "=" * min(WIDTH, len(title) + 2 + len(report.host))
    if report.partial:
        yield f"The day is not over: figures so far, at {moment(report.generated)}."
    yield ""


def _figures(report: Report) -> Iterator[str]:
    yield f"{'':38}{'day':>10}{'7-day avg':>12}{'change':>9}"
    jumps = False
    for name, label, indent in FIGURES:
        change = report.compare(name)
        mark = JUMP if change.is_jump else ""
        jumps = jumps or bool(mark)
        row = f"{' ' * indent}{label}"
        yield (
            f"{row:38}{number(change.value):>10}{number(change.average):>12}"
            f"{change.percent:>9} {mark}"
        )
    volume = report.compare("size")
    yield f"{'Volume':38}{size(volume.value):>10}{size(volume.average):>12}{volume.percent:>9}"
    yield f"{'Average scan time':38}{report.scan_ms:>7} ms"
    if report.delay is not None:
        yield f"{'Gateway delay (250 to delivery)':38}{report.delay.describe()}"
    if jumps:
        yield ""
        yield f"{JUMP} marks a figure far from its average over the previous 7 days."
    yield ""


def _tallies(
    heading: str, tallies: Sequence[Tally], total: int | None = None, unit: str = ""
) -> Iterator[str]:
    if not tallies:
        return
    yield heading + (f" ({plural(total, unit)})" if total is not None else "")
    for tally in tallies:
        yield f"  {tally.count:>8,}  {fit(tally.name, WIDTH - 12)}"
    yield ""


def _hours(hours: Sequence[int]) -> Iterator[str]:
    if not any(hours):
        return
    top = max(hours)
    yield "Messages received by hour"
    for hour, count in enumerate(hours):
        bar = "#" * round(BAR * count / top)
        if count and not bar:
            bar = "."
        yield f"  {hour:02d}:00  {bar:{BAR}}  {count:>8,}"
    yield ""


def _scanner(report: Report) -> Iterator[str]:
    yield "Scanner"
    outages = report.outages
    if outages.count or outages.downtime:
        text = f"  outages: {outages.count}, down {duration(outages.downtime)} in all"
        yield text + (" (still down at the end)" if outages.down_at_end else "")
    else:
        yield "  outages: none"
    sig = report.signatures
    if sig is None:
        yield "  signatures: no update recorded yet"
    else:
        yield fit(f"  signatures: {sig.verdict} at {moment(sig.time)}", WIDTH)
        for line in textwrap.wrap(sig.detail, WIDTH - 6, max_lines=4, placeholder=" \u2026"):
            yield f"    {line}"
        yield f"  last good update: {_age(sig.good_age, report.partial)}"
        yield f"  updates during the day: {sig.runs}, {sig.failures} failed or stale"
    yield ""


def _age(seconds: float | None, partial: bool) -> str:
    """How old the signatures were at the end of the day (or now, for today)."""
    if seconds is None:
        return "none recorded"
    return f"{duration(seconds)} old " + ("now" if partial else "at the end of the day")


def _backlog(report: Report) -> Iterator[str]:
    yield f"Spool now ({moment(report.generated)})"
    for folder in report.backlog:
        yield f"  {folder.name:12}{_folder(folder)}"
    yield ""


def _folder(folder: Folder) -> str:
    word = "message" if folder.name == "quarantine" else "file"
    text = f"{plural(folder.files, word):>16}, {size(folder.size):>9}"
    if folder.oldest_age is not None:
        text += f", oldest {duration(folder.oldest_age)}"
    return text


def _blocked(report: Report) -> Iterator[str]:
    total = report.counts.quarantined
    if not report.blocked:
        return
    shown = min(len(report.blocked), BLOCKED)
    heading = "Quarantined during the day"
    yield heading + (f" ({shown} newest of {total:,})" if shown < total else f" ({total:,})")
    for item in report.blocked[:BLOCKED]:
        yield from _blocked_item(item)
    yield ""


def _blocked_item(item: Blocked) -> Iterator[str]:
    what = ", ".join(item.viruses) if item.viruses else ", ".join(item.attachments)
    yield fit(f"  {moment(item.time, with_date=False)}  {item.reason:10} {what}", WIDTH)
    rcpts = ", ".join(f"<{r}>" for r in item.recipients)
    yield fit(f"            from <{item.sender}> to {rcpts}", WIDTH)
    if item.subject is not None:
        yield fit(f"            subject: {item.subject}", WIDTH)
    if item.viruses and item.attachments:
        yield fit(f"            attachments: {', '.join(item.attachments)}", WIDTH)
    yield fit(f"            {item.qid}: {item.status.value}", WIDTH)
