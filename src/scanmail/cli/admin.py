"""The admin's commands: quarantine list/show/release/delete/purge, check, status."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import click

from scanmail import clamd_limits, hostname, quarantine
from scanmail.admin import show
from scanmail.admin.listing import quarantine_lines
from scanmail.admin.selfrelay import relay_to_self
from scanmail.admin.status import gather
from scanmail.cli import exit_codes, shared_options, start
from scanmail.config import Config
from scanmail.errors import ExitCode, SpoolError
from scanmail.events import EventLog
from scanmail.humanize import duration, size
from scanmail.mime import Limits, Part
from scanmail.privileges import invoking_uid
from scanmail.scan import Inspector, load_rules, rescanner
from scanmail.spool import Spool
from scanmail.untrusted import for_terminal
from scanmail.verdict import Reason, Verdict

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
QUARANTINE_REASONS = [r.value for r in Reason if r not in (Reason.CLEAN, Reason.SCANNER_DOWN)]


def parse_period(text: str) -> float:
    """Seconds in a period such as 30d, 12h, 2w or 90m; a bare number is days."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a period such as 30d, 12h, 2w or 90m")
    return float(match.group(1)) * _UNITS[match.group(2) or "d"]


def parse_since(text: str) -> float:
    """A point in time: a date, a date and time, or a period back from now (7d)."""
    for layout in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(text, layout).timestamp()
    try:
        return time.time() - parse_period(text)
    except click.BadParameter:
        raise click.BadParameter(
            f"{text!r} is neither a date (2024-05-01, '2024-05-01 12:00') nor a period (7d)"
        ) from None


def _period(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else parse_period(value)


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    return None if value is None else parse_since(value)


def who() -> str:
    """The person behind this command: the sudo caller, else the login name."""
    if os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    with contextlib.suppress(OSError):
        return os.getlogin()
    uid = invoking_uid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


@contextlib.contextmanager
def spool_access() -> Iterator[None]:
    """A permission error becomes one line that says who may do this."""
    try:
        yield
    except PermissionError as exc:
        raise SpoolError(
            f"{exc.filename}: permission denied (a file not owned by the spool's owner? "
            "chown it to the owner of the spool folder)"
        ) from None


@contextlib.contextmanager
def admin(ctx: click.Context) -> Iterator[Config]:
    """Config loaded, errors turned into exit codes, permission errors explained."""
    with exit_codes(), spool_access():
        yield start("scanmail", ctx.obj["config_path"], ctx.obj["verbose"])


def spool_of(config: Config) -> Spool:
    """The configured spool; SpoolError if it was never created."""
    spool = Spool(config.spool_dir)
    spool.check()
    return spool


@contextlib.contextmanager
def event_log(config: Config) -> Iterator[EventLog]:
    """The event database, owned like its folder even when root creates it."""
    with EventLog(config.var_dir) as events:
        if os.geteuid() == 0:
            owner = config.var_dir.stat()
            for path in config.var_dir.glob(f"{events.path.name}*"):
                os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
        yield events


# -- scanmail quarantine ... ------------------------------------------------------------


@click.group("quarantine")
@shared_options
def quarantine_group() -> None:
    """Look at, release and delete quarantined mail."""


@quarantine_group.command("list")
@shared_options
@click.option("--since", callback=_since, metavar="WHEN",
              help="Only mail quarantined since then: 2024-05-01, '2024-05-01 12:00' or 7d.")
@click.option("--reason", type=click.Choice(QUARANTINE_REASONS), default=None,
              help="Only mail quarantined for this reason.")
@click.pass_context
def list_command(ctx: click.Context, since: float | None, reason: str | None) -> None:
    """List quarantined mail, newest first, in aligned columns.

    Columns: id, age, reason, virus or banned name, sender, recipients, size.
    """
    with admin(ctx) as config:
        chosen = [record for record in quarantine.records(spool_of(config))
                  if (since is None or record.time >= since) and reason in (None, record.reason)]
        for line in quarantine_lines(chosen):
            click.echo(line)


@quarantine_group.command("show")
@shared_options
@click.argument("qid")
@click.pass_context
def show_command(ctx: click.Context, qid: str) -> None:
    """Show a message's record, headers and part tree (never its payload)."""
    with admin(ctx) as config:
        spool = spool_of(config)
        limits = Limits(config.decode_max_bytes, config.decode_max_parts,
                        config.decode_max_depth)
        seen = show.examine(spool, qid, limits)
        for line in show_lines(seen, quarantine.extras_dir(spool, qid)):
            click.echo(for_terminal(line))


def show_lines(seen: show.Examination, extras: Path) -> Iterator[str]:
    yield "Record:"
    yield from (f"  {line}" for line in seen.record.to_text().splitlines())
    yield "Headers:"
    yield from (f"  {name}: {value[:300]}" for name, value in seen.headers)
    yield "Parts:"
    yield from (f"  {part_line(part)}" for part in seen.parts)
    if seen.problem:
        yield f"  ({seen.problem})"
    yield f"Decoded files in {extras / quarantine.PARTS}:"
    yield from (f"  {name}  {size(length)}" for name, length in seen.stored)
    if not seen.stored:
        yield "  (none)"


def part_line(part: Part) -> str:
    line = "  " * part.depth + part.content_type
    if part.origin != "mime":
        line += f" [{part.origin}]"
    line += "".join(f"  {name!r}" for name in part.names[:3])
    if part.path is not None:
        line += f"  {size(part.size)}"
    return line


@quarantine_group.command("release")
@shared_options
@click.argument("qid")
@click.option("--rescan", is_flag=True,
              help="Scan it again with today's signatures first; keep it if a virus is found.")
@click.option("--force", is_flag=True, help="Release even if the rescan objects.")
@click.pass_context
def release_command(ctx: click.Context, qid: str, rescan: bool, force: bool) -> None:
    """Send a quarantined message on to the internal server, unchanged."""
    with admin(ctx) as config, event_log(config) as events:
        vet = rescanner(config) if rescan else None
        target = quarantine.release(spool_of(config), qid, events, who(), vet, force)
        click.echo(f"released {qid} to {target.parent}")


@quarantine_group.command("delete")
@shared_options
@click.argument("qid")
@click.pass_context
def delete_command(ctx: click.Context, qid: str) -> None:
    """Delete a quarantined message for good."""
    with admin(ctx) as config, event_log(config) as events:
        quarantine.delete(spool_of(config), qid, events, who())
        click.echo(f"deleted {qid}")


@quarantine_group.command("purge")
@shared_options
@click.option("--older-than", "older_than", callback=_period, metavar="PERIOD",
              help="Age, such as 30d or 12w (default: QUARANTINE_RETENTION_DAYS).")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.pass_context
def purge_command(ctx: click.Context, older_than: float | None, dry_run: bool) -> None:
    """Delete quarantined mail older than the retention period."""
    with admin(ctx) as config:
        period = older_than or config.quarantine_retention_days * 86400.0
        cutoff = time.time() - period
        spool = spool_of(config)
        if dry_run:
            chosen = quarantine.expired(spool, cutoff)
        else:
            with event_log(config) as events:
                chosen = quarantine.purge(spool, cutoff, events, who())
        verb = "would delete" if dry_run else "deleted"
        for line in quarantine_lines(chosen):
            click.echo(f"{verb} {line}")
        total = size(sum(record.size for record in chosen))
        click.echo(f"{verb} {len(chosen)} messages ({total}) quarantined more than "
                   f"{duration(period)} ago")


# -- scanmail check, scanmail status ------------------------------------------------------


@click.command("check")
@shared_options
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rules", "rules_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), default=None,
              help="Use matches.bad and matches.doc from this folder (try new patterns).")
@click.pass_context
def check_command(ctx: click.Context, files: tuple[Path, ...], rules_dir: Path | None) -> None:
    """Decide files as a pass would, and say why; move nothing.

    FILE is a spool file or a plain message (.eml).

    Exit 0 if every file would be delivered, 1 if any would be quarantined (infected,
    banned, unchecked, malformed), 75 if the scanner does not answer.
    """
    with admin(ctx) as config:
        inspector = Inspector(config)
        if rules_dir is not None:
            inspector.rules = load_rules(rules_dir)
        if not inspector.rules.bad:  # a missing file is an empty list: say so
            where = rules_dir or config.etc_dir
            click.echo(f"scanmail: warning: no patterns in {where / 'matches.bad'}", err=True)
        for warning in (relay_to_self(config), hostname.warning(config.hostname)):
            if warning:
                click.echo(f"scanmail: warning: {warning}", err=True)
        for warning in clamd_limits.warnings(config):
            click.echo(f"scanmail: warning: {warning}", err=True)
        code = ExitCode.OK
        for path in files:
            inspection = inspector.inspect(path)
            click.echo(for_terminal(inspection.describe()))
            if inspection.decision.verdict is Verdict.QUARANTINE:
                code = ExitCode.FAILURE
        sys.exit(code)


@click.command("status")
@shared_options
@click.option("--max-wait", callback=_period, default="15m", show_default=True,
              metavar="PERIOD",
              help="How long mail may wait in incoming or outgoing, or between passes.")
@click.pass_context
def status_command(ctx: click.Context, max_wait: float) -> None:
    """Show the gateway's state; exit non-zero when it needs attention.

    Folders (count, oldest), the scanner and its signatures' age, the last pass, and the
    forwarder's queue in outgoing. Exit 0 when all is well, 1 when something needs
    attention (stale signatures, mail waiting too long, no recent pass), 75 when the
    scanner does not answer.
    """
    with admin(ctx) as config:
        state = gather(config, max_wait)
        for line in state.lines():
            click.echo(for_terminal(line))
        sys.exit(state.exit_code)


def register(group: click.Group) -> None:
    """Attach the admin commands to the scanmail group."""
    group.add_command(quarantine_group)
    group.add_command(check_command)
    group.add_command(status_command)
