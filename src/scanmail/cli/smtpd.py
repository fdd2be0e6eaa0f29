"""scanmail-smtpd: the SMTP receiver that fills SPOOL/incoming."""

from __future__ import annotations

import os
from pathlib import Path

import click

from scanmail.cli import config_option, exit_codes, start, verbose_option
from scanmail.config import SETTINGS
from scanmail.errors import ConfigError
from scanmail.privileges import spool_owner
from scanmail.smtpd import server


def parse_listen(value: str) -> tuple[str, int]:
    """ADDRESS:PORT, validated by the LISTEN setting's own parser."""
    setting = next(s for s in SETTINGS if s.name == "LISTEN")
    try:
        listen: tuple[str, int] = setting.parse(value)
    except ValueError as exc:
        raise ConfigError(f"--listen {value!r} {exc}") from None
    return listen


@click.command()
@config_option
@verbose_option
@click.option("--listen", metavar="ADDR:PORT",
              help="Where to listen, IPv6 in brackets (default: LISTEN, [::]:25: IPv4 and IPv6).")
@click.option("--user", metavar="NAME",
              help="Run as this user once the port is bound (root's default: the spool's owner).")
def main(config_path: Path | None, verbose: bool, listen: str | None, user: str | None) -> None:
    """Receive mail by SMTP into the incoming spool until SIGTERM."""
    with exit_codes():
        config = start("scanmail-smtpd", config_path, verbose, switch=False)
        if user is None and os.geteuid() == 0:  # bind as root, then become the spool's owner
            owner = spool_owner(config.spool_dir)
            user = owner.pw_name if owner else None
        server.run(config, parse_listen(listen) if listen else None, user)


if __name__ == "__main__":
    main()
