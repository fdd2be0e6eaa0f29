"""scanmail --watch: each message decided as soon as it is complete in incoming (issue 11).

The service holds the run lock for its life, so a cron `scanmail --once` meanwhile exits 0
saying the lock is held (the service is doing the work), and one that runs when the
service starts makes it wait. It lets route.recover() finish what a killed run left, then
decides each file inotify reports, SCAN_WORKERS at a time, with a sweep of incoming every
interval seconds as the safety net. The scanner giving no answer pauses it for
SCANNER_RETRY seconds (the files stay in incoming; one alert per outage, as in a pass).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from scanmail.config import Config
from scanmail.errors import GatewayError
from scanmail.events import EventLog
from scanmail.scan import route
from scanmail.scan.rules import load_rules
from scanmail.scan.runner import LOCK_NAME, Gateway
from scanmail.scan.scanner import make_scanner
from scanmail.spool import Spool, list_complete, run_lock
from scanmail.verdict import Reason, Verdict
from scanmail.watcher import FolderWatch, Stop, Workers, held_lock

log = logging.getLogger(__name__)

SCANNER_RETRY = 10.0  # seconds between tries while the scanner gives no answer
RULES = ("matches.bad", "matches.doc")


class ScanService:
    """The watch loop over incoming, and the workers that decide its files."""

    def __init__(self, config: Config, stop: Stop, sweep: float) -> None:
        self.config = config
        self.stop = stop
        self.sweep_every = sweep
        self.spool = Spool(config.spool_dir)
        self.lock_path = config.var_dir / LOCK_NAME
        self.down_until = 0.0  # monotonic: the scanner gave no answer; wait till then
        self.error: GatewayError | None = None
        self.rules_stamp: tuple[int, ...] = ()
        self.gateway: Gateway | None = None
        self.watch: FolderWatch | None = None

    def serve(self) -> None:
        """Watch incoming until stop is set; raise the spool error that stopped it, if any."""
        self.spool.check()
        with held_lock(lambda: run_lock(self.lock_path), self.stop, "scanmail") as held:
            if not held:
                return
            # The watch begins before recover() and the first sweep: nothing slips between.
            with FolderWatch(self.spool.incoming, self.stop) as watch, \
                    EventLog(self.config.var_dir) as events:
                self.watch = watch
                route.recover(self.spool)
                log.info("watching %s (sweep every %.0f s)", self.spool.incoming,
                         self.sweep_every)
                workers = Workers(self.config.scan_workers, self._work, "scan")
                try:
                    self._loop(watch, workers, events)
                finally:
                    workers.stop()
        if self.error is not None:
            raise self.error

    def _loop(self, watch: FolderWatch, workers: Workers, events: EventLog) -> None:
        next_sweep = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            self._refresh(events)
            if now >= self.down_until and now >= next_sweep:
                self._sweep(workers)
                next_sweep = now + self.sweep_every
            wake = max(next_sweep, self.down_until)
            arrivals = watch.wait(max(0.0, wake - time.monotonic()))
            if arrivals.overflow:
                log.warning("inotify queue overflow on %s: sweeping", self.spool.incoming)
                next_sweep = 0.0
            if time.monotonic() < self.down_until:
                next_sweep = min(next_sweep, self.down_until)
                continue  # the files wait; the sweep after the pause takes them
            for name in arrivals.names:
                if watch.is_ready(name):
                    workers.offer(name)

    def _sweep(self, workers: Workers) -> None:
        """Every complete file in incoming, oldest first, to the workers; mark the pass."""
        for path in list_complete(self.spool.incoming):
            workers.offer(path.name)
        os.utime(self.lock_path)  # `scanmail status` reads the last pass from it

    def _refresh(self, events: EventLog) -> None:
        """A gateway with today's rules (edited rules take effect as after a pass)."""
        stamp = tuple(_mtime(self.config.etc_dir / name) for name in RULES)
        if self.gateway is None or stamp != self.rules_stamp:
            rules = load_rules(self.config.etc_dir)
            self.gateway = Gateway(self.config, rules, make_scanner(self.config), events)
            self.rules_stamp = stamp

    def _work(self, worker: int, name: str) -> None:
        gateway = self.gateway
        if gateway is None or time.monotonic() < self.down_until:
            return  # stays in incoming for the sweep after the pause
        try:
            decision = gateway.process_one(self.spool.incoming / name)
        except FileNotFoundError:
            return  # moved by the admin meanwhile
        except GatewayError as exc:
            # The spool failed (a full disk, a folder it cannot write): the service survives
            # (issue 14); the file stays in incoming and the sweep after a pause retries it.
            log.error("pass failed, next try in %.0f s: %s", SCANNER_RETRY, exc)
            self.down_until = time.monotonic() + SCANNER_RETRY
            if self.watch is not None:
                self.watch.nudge()
            return
        if decision.verdict is Verdict.RETRY and decision.reason is Reason.SCANNER_DOWN:
            self.down_until = time.monotonic() + SCANNER_RETRY
            if self.watch is not None:
                self.watch.nudge()


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def serve(config: Config, stop: Stop, sweep: float) -> None:
    """scanmail --watch until stop is set."""
    ScanService(config, stop, sweep).serve()
