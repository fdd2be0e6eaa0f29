"""scanmail setup: the whole install from answers (user, spool, settings, clamd, units)."""

from __future__ import annotations

import sysconfig

import click

from scanmail.admin.answers import DEFAULT_LISTEN, DEFAULT_UNIT_DIR, DEFAULT_USER, gather
from scanmail.admin.setup import run_setup
from scanmail.cli import exit_codes, verbose_option
from scanmail.config import DEFAULT_SPOOL
from scanmail.logs import setup_logging


@click.command("setup")
@verbose_option
@click.option("--user", default=DEFAULT_USER, show_default=True,
              help="The service user, created as a system user if missing.")
@click.option("--spool", metavar="DIR", help=f"The spool root (default: {DEFAULT_SPOOL}).")
@click.option("--hostname", metavar="NAME", help="This gateway's name (default: the FQDN).")
@click.option("--local-domains", metavar="DOMAINS",
              help="Domains the receiver accepts mail for (default: the host name's domain).")
@click.option("--relay-host", metavar="HOST[:PORT]",
              help="The internal mail server clean mail goes to (needed once).")
@click.option("--admin-email", metavar="ADDRESS",
              help="Alerts and reports (default: postmaster@ the first local domain).")
@click.option("--listen", metavar="ADDR:PORT",
              help=f"Where the receiver listens (default: {DEFAULT_LISTEN}).")
@click.option("--clamd-socket", metavar="PATH", help="clamd's socket, or tcp://host:port "
              "(default: CLAMD_SOCKET, /var/run/clamav/clamd.ctl).")
@click.option("--clamd-conf", metavar="FILE", help="The clamd.conf whose limits are raised "
              "(default: CLAMD_CONF, /etc/clamav/clamd.conf; empty: leave clamd alone).")
@click.option("--sig-db-dir", metavar="DIR", help="ClamAV's database folder the service user "
              "may write, by ACL (default: SIG_DB_DIR, /var/lib/clamav).")
@click.option("--unit-dir", metavar="DIR", help=f"Where the systemd units go (default: "
              f"{DEFAULT_UNIT_DIR}).")
@click.option("--bin-dir", metavar="DIR", default=sysconfig.get_path("scripts"),
              show_default=True, help="The installed commands, for the units' ExecStart.")
@click.option("--start/--no-start", default=True, show_default=True,
              help="Enable and start the services when systemd runs.")
@click.pass_context
def setup_command(
    ctx: click.Context, verbose: bool, user: str, spool: str | None, hostname: str | None,
    local_domains: str | None, relay_host: str | None, admin_email: str | None,
    listen: str | None, clamd_socket: str | None, clamd_conf: str | None,
    sig_db_dir: str | None, unit_dir: str | None, bin_dir: str, start: bool,
) -> None:
    """Install the gateway from answers, as root: the service user, the spool, scanmail.env,
    clamd's limits, the ACL on ClamAV's folder and the systemd units; then start them.

    Each step is done only if needed, and said in one line: run it again at any time (an
    existing scanmail.env gets only the settings given here). Exit 0 when done, 73 when a
    step cannot be done (not root, a tool failed), 78 for a bad answer or setting.
    """
    with exit_codes():
        setup_logging("scanmail", verbose or ctx.obj["verbose"])
        answers = gather(
            user=user, spool=spool, hostname=hostname, local_domains=local_domains,
            relay_host=relay_host, admin_email=admin_email, listen=listen,
            clamd_socket=clamd_socket, clamd_conf=clamd_conf, sig_db_dir=sig_db_dir,
            unit_dir=unit_dir, bin_dir=bin_dir, start=start,
        )
        for step in run_setup(answers):
            click.echo(step.line)


def register(group: click.Group) -> None:
    """Attach `setup` to the scanmail group."""
    group.add_command(setup_command)
