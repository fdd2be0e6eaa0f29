"""scanmail-fwd: delivers SPOOL/outgoing to the internal mail server."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from types import FrameType

import click

from scanmail.cli import config_option, exit_codes, start, summary_line, verbose_option
from scanmail.errors import TempFailure
from scanmail.fwd import forwarder
from scanmail.fwd import watch as service
from scanmail.watcher import Stop


@click.command()
@config_option
@verbose_option
@click.option("--once", is_flag=True, help="One pass, then exit (for cron); 75 if mail waits.")
@click.option("--flush", is_flag=True, help="Try every message now, ignoring retry delays.")
def main(config_path: Path | None, verbose: bool, once: bool, flush: bool) -> None:
    """Deliver the outgoing spool: once, or as a service until SIGTERM.

    The service delivers each file as soon as it lands in outgoing, sweeps the folder
    every FWD_INTERVAL seconds, and keeps the retry delays of deferred mail.
    """
    stop = Stop()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    with exit_codes():
        config = start("scanmail-fwd", config_path, verbose)
        if once:
            report = forwarder.run_once(config, flush, stop)
            summary_line(report.headline())
            forwarder.check(report)  # mail left for later: exit 75
            return
        if flush:  # retry everything now, then serve (mail left for later is the service's)
            with contextlib.suppress(TempFailure):
                forwarder.run(config, True, True, stop)
        service.serve(config, stop)


if __name__ == "__main__":
    main()
