"""The daysumm report as HTML: the statistics page (inline CSS and SVG charts) and the mail part.

The page is one self-contained file: no scripts, no external requests (a CSP meta tag
forbids them), so it can sit in any web server's folder. Every value that came from a
message is escaped here, at the one place it becomes HTML.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib import resources

from scanmail.daysumm.model import Blocked, Folder, Report, Tally
from scanmail.daysumm.svg import Series, chart
from scanmail.daysumm.text import FIGURES
from scanmail.humanize import duration, moment, number, plural, size
from scanmail.untrusted import for_html

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

# Okabe-Ito: colours told apart with any colour vision.
BLUE, ORANGE, VERMILLION, SKY, GREY, GREEN, PURPLE, YELLOW = (
    "#0072b2", "#e69f00", "#d55e00", "#56b4e9", "#8c8c8c", "#009e73", "#cc79a7", "#c8b100",
)
REASON_COLOURS = (("banned", ORANGE), ("infected", VERMILLION), ("encrypted", PURPLE),
                  ("unchecked", SKY),
                  ("malformed", GREY))
VIRUS_COLOURS = (VERMILLION, BLUE, GREEN, PURPLE, YELLOW)
_GONE = '<span class="muted">\u2013</span>'  # no record left: released or deleted
CARDS = ("received", "delivered", "quarantined", "infected", "banned", "retried")

STYLE = (resources.files("scanmail.daysumm") / "page.css").read_text(encoding="utf-8")


def esc(text: object) -> str:
    """Text as HTML: the only way a value reaches the page."""
    return for_html(text)


def short(text: str, limit: int = 90) -> str:
    """A long name cut so that it cannot push a table apart."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def render_page(report: Report) -> str:
    """The statistics page: the day's figures and the last 30 days as charts."""
    return _document(report, [*_cards(report), *_charts(report), *_details(report, svg=True)])


def render_mail(report: Report) -> str:
    """The HTML part of the report mail: the page without the 30-day charts."""
    return _document(report, [*_cards(report), *_details(report, svg=False)])


def _document(report: Report, body: Sequence[str]) -> str:
    title = f"scanmail report {report.day.isoformat()}, {report.host}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
            '<meta name="referrer" content="no-referrer">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{STYLE}</style>",
            "</head><body><main>",
            *_header(report),
            *body,
            f"<footer>Made by daysumm from the event database at {esc(moment(report.generated))}."
            " Messages are counted when the scanner decides them; a day runs from local midnight"
            " to midnight.</footer>",
            "</main></body></html>",
            "",
        ]
    )


def _header(report: Report) -> Iterator[str]:
    yield "<header>"
    yield f"<h1>Mail gateway report: {esc(f'{report.day:%A %d %B %Y}')}</h1>"
    partial = ""
    if report.partial:
        partial = f' · <span class="partial">so far, at {esc(moment(report.generated))}</span>'
    yield f"<p>{esc(report.host)}{partial}</p>"
    yield "</header>"


def _cards(report: Report) -> Iterator[str]:
    labels = {name: label for name, label, _ in FIGURES}
    labels.update(received="Received", delivered="Delivered clean", quarantined="Quarantined",
                  infected="Infected", banned="Banned", retried="Left for retry")
    yield '<section class="cards">'
    for name in CARDS:
        change = report.compare(name)
        jump = " jump" if change.is_jump else ""
        percent = f" · <b>{esc(change.percent)}</b>" if change.percent else ""
        yield (
            f'<div class="card{jump}"><div class="label">{esc(labels[name])}</div>'
            f'<div class="value">{esc(number(change.value))}</div>'
            f'<div class="avg">7-day avg {esc(number(change.average))}{percent}</div></div>'
        )
    yield "</section>"


def _charts(report: Report) -> Iterator[str]:
    days = report.charted
    labels = [f"{day.day:%m-%d}" for day in days]
    yield '<section class="grid2" id="charts">'
    yield _panel("Daily volume (30 days)", labels, [
        Series("delivered clean", BLUE, [d.delivered for d in days]),
        Series("quarantined", VERMILLION, [d.quarantined for d in days]),
        Series("undecided", GREY, [d.received - d.delivered - d.quarantined for d in days]),
    ])
    yield _panel("Blocked mail by reason", labels, [
        Series(reason, colour, [getattr(d, reason) for d in days])
        for reason, colour in REASON_COLOURS
    ])
    yield _panel("Viruses over time (infected messages)", labels, _virus_series(report))
    average = report.rolling_average()
    mean = sum(d.received for d in days) / len(days)
    yield _panel(f"Average daily volume: {number(round(mean))} messages a day", labels, [
        Series("received per day", SKY, [d.received for d in days]),
        Series("7-day average", BLUE, average, line=True),
        Series("30-day average", GREY, [mean] * len(days), line=True, dashed=True),
    ])
    yield "</section>"


def _virus_series(report: Report) -> list[Series]:
    named = report.virus_history[: len(VIRUS_COLOURS)]
    series = [
        Series(name, colour, counts)
        for (name, counts), colour in zip(named, VIRUS_COLOURS, strict=False)
    ]
    rest = report.virus_history[len(VIRUS_COLOURS):]
    if rest:
        totals = [sum(counts) for counts in zip(*(r[1] for r in rest), strict=True)]
        series.append(Series("others", GREY, totals))
    return series


def _panel(title: str, labels: Sequence[str], series: Sequence[Series]) -> str:
    legend = "".join(
        f'<li><span class="swatch" style="background:{s.colour}"></span>{esc(s.name)}</li>'
        for s in series
        if any(s.values) or not s.line
    )
    return (
        f'<div class="panel"><h2>{esc(title)}</h2>{chart(title, labels, series)}'
        f'<ul class="legend">{legend}</ul></div>'
    )


def _details(report: Report, svg: bool) -> Iterator[str]:
    yield '<section class="grid2" id="day">'
    yield f'<div class="panel"><h2>The day against the previous 7 days</h2>{_figures(report)}</div>'
    yield '<div class="stack">'
    yield f'<div class="panel"><h2>Messages received by hour</h2>{_hours(report, svg)}</div>'
    yield f'<div class="panel"><h2>Scanner</h2>{_scanner(report)}</div>'
    yield "</div></section>"
    yield '<section class="grid3" id="tallies">'
    yield _tally_panel("Viruses found", report.viruses, "virus")
    yield _tally_panel("Top senders of blocked mail", report.senders, "sender")
    yield _tally_panel("Top recipients of blocked mail", report.recipients, "recipient")
    yield _tally_panel("Attachment names in blocked mail", report.attachments, "file name")
    yield _tally_panel("Delivery failures", report.failures, "reply")
    yield f'<div class="panel"><h2>Spool now</h2>{_backlog(report)}</div>'
    yield "</section>"
    yield from _blocked(report)


def _figures(report: Report) -> str:
    rows = ['<table><tr><th></th><th class="n">day</th><th class="n">7-day avg</th>'
            '<th class="n">change</th></tr>']
    for name, label, indent in FIGURES:
        change = report.compare(name)
        classes = " ".join(c for c in ("jump" if change.is_jump else "",
                                       {2: "sub", 4: "sub2"}.get(indent, "")) if c)
        rows.append(
            f'<tr class="{classes}"><td>{esc(label)}</td><td class="n">{esc(number(change.value))}'
            f'</td><td class="n">{esc(number(change.average))}</td>'
            f'<td class="n">{esc(change.percent)}</td></tr>'
        )
    volume = report.compare("size")
    rows.append(
        f'<tr><td>Volume</td><td class="n">{esc(size(volume.value))}</td>'
        f'<td class="n">{esc(size(volume.average))}</td>'
        f'<td class="n">{esc(volume.percent)}</td></tr>'
    )
    rows.append(f'<tr><td>Average scan time</td><td class="n">{report.scan_ms} ms</td>'
                "<td></td><td></td></tr>")
    if report.delay is not None:
        rows.append(f'<tr><td>Gateway delay (250 to delivery)</td>'
                    f'<td class="n" colspan="3">{esc(report.delay.describe())}</td></tr>')
    rows.append("</table>")
    return "".join(rows)


def _hours(report: Report, svg: bool) -> str:
    labels = [f"{hour:02d}" for hour in range(24)]
    if svg:
        return chart("Messages received by hour", labels,
                     [Series("messages", BLUE, report.hours)], height=240, label_every=3)
    top = max(report.hours) or 1
    rows = [
        f'<tr><td class="n">{label}:00</td><td><span class="bar" '
        f'style="width:{240 * count // top}px"></span></td><td class="n">{count:,}</td></tr>'
        for label, count in zip(labels, report.hours, strict=True)
    ]
    return "<table>" + "".join(rows) + "</table>"


def _tally_panel(title: str, tallies: Sequence[Tally], what: str) -> str:
    if not tallies:
        return f'<div class="panel"><h2>{esc(title)}</h2><p class="muted">None.</p></div>'
    rows = "".join(
        f'<tr><td class="what">{esc(short(t.name))}</td><td class="n">{t.count:,}</td></tr>'
        for t in tallies
    )
    return (
        f'<div class="panel"><h2>{esc(title)}</h2><table><tr><th>{esc(what)}</th>'
        f'<th class="n">messages</th></tr>{rows}</table></div>'
    )


def _scanner(report: Report) -> str:
    rows: list[tuple[str, str]] = []
    outages = report.outages
    if outages.count or outages.downtime:
        text = f"{outages.count}, down {duration(outages.downtime)} in all"
        rows.append(("Outages", text + (" (still down)" if outages.down_at_end else "")))
    else:
        rows.append(("Outages", "none"))
    sig = report.signatures
    if sig is None:
        rows.append(("Signatures", "no update recorded yet"))
    else:
        rows.append(("Signatures", f"{sig.verdict} at {moment(sig.time)}"))
        if sig.detail:
            rows.append(("", sig.detail))
        good = "none recorded" if sig.good_age is None else f"{duration(sig.good_age)} old"
        rows.append(("Last good", good))
        rows.append(("Updates", f"{sig.runs} during the day, {sig.failures} failed or stale"))
    return _pairs(rows)


def _backlog(report: Report) -> str:
    rows = [(folder.name.capitalize(), _folder(folder)) for folder in report.backlog]
    return _pairs(rows) + f'<p class="muted">As of {esc(moment(report.generated))}.</p>'


def _pairs(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _folder(folder: Folder) -> str:
    word = "message" if folder.name == "quarantine" else "file"
    text = f"{plural(folder.files, word)}, {size(folder.size)}"
    if folder.oldest_age is not None:
        text += f", oldest {duration(folder.oldest_age)}"
    return text


def _blocked(report: Report) -> Iterator[str]:
    if not report.blocked:
        return
    total = report.counts.quarantined
    shown = len(report.blocked)
    count = f"{shown} newest of {total:,}" if shown < total else f"{total:,}"
    yield f'<section class="panel" id="blocked"><h2>Quarantined during the day ({esc(count)})</h2>'
    yield '<table class="blocked">'
    yield ('<colgroup><col style="width:9%"><col style="width:9%"><col style="width:24%">'
           '<col style="width:17%"><col style="width:17%"><col style="width:14%">'
           '<col style="width:10%"></colgroup>')
    yield ("<tr><th>time</th><th>reason</th><th>virus or attachment</th><th>from</th>"
           "<th>to</th><th>subject</th><th>status</th></tr>")
    for item in report.blocked:
        yield _blocked_row(item)
    yield "</table></section>"


def _blocked_row(item: Blocked) -> str:
    what = "<br>".join(esc(short(v)) for v in item.viruses)
    names = "<br>".join(esc(short(a)) for a in item.attachments[:5])
    if len(item.attachments) > 5:
        names += f"<br>and {len(item.attachments) - 5} more"
    if what and names:
        what += f'<br><span class="muted">{names}</span>'
    subject = esc(short(item.subject)) if item.subject is not None else _GONE
    rcpts = "<br>".join(esc(r) for r in item.recipients)
    return (
        f'<tr><td class="n">{esc(moment(item.time, with_date=False))}</td>'
        f"<td>{esc(item.reason)}</td><td class=\"what\">{what or names}</td>"
        f'<td class="addr">{esc(item.sender or "<>")}</td><td class="addr">{rcpts}</td>'
        f'<td class="subject">{subject}</td>'
        f'<td class="status-{item.status.value}">{item.status.value}</td></tr>'
    )
