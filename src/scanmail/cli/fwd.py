"""scanmail-fwd: delivers SPOOL/outgoing to the internal mail server."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from scanmail.cli import config_option, exit_codes, start, verbose_option
from scanmail.fwd import forwarder


@click.command()
@config_option
@verbose_option
@click.option("--once", is_flag=True, help="One pass, then exit (for cron); 75 if mail waits.")
@click.option("--flush", is_flag=True, help="Try every message now, ignoring retry delays.")
def main(config_path: Path | None, verbose: bool, once: bool, flush: bool) -> None:
    """Deliver the outgoing spool, once or every FWD_INTERVAL seconds until SIGTERM."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    with exit_codes():
        forwarder.run(start("scanmail-fwd", config_path, verbose), once, flush, stop)


if __name__ == "__main__":
    main()
