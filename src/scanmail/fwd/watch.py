"""scanmail-fwd as a service: each file delivered as soon as it is complete in outgoing.

The service holds fwd.lock for its life (a cron `scanmail-fwd --once` meanwhile says so and
exits 0, as it always did beside the daemon). FWD_CONCURRENCY workers each keep their
SMTP connection to the relay while mail keeps coming and close it after IDLE_CLOSE
seconds without any. The retry backoff is the forwarder's: a deferred file is taken
again when its next_try comes (the sweep wakes for it), and every FWD_INTERVAL seconds a
sweep of outgoing is the safety net. With the relay down the workers stop and a plain
pass (which also expires mail past FWD_MAX_AGE_DAYS) is tried every FWD_INTERVAL until
it gets through.
"""

from __future__ import annotations

import logging
import time

from scanmail.config import Config
from scanmail.errors import GatewayError
from scanmail.events import EventLog
from scanmail.fwd.forwarder import LOCK_NAME, Forwarder
from scanmail.fwd.report import PassReport
from scanmail.fwd.transport import RelayDown, Transport, open_transport
from scanmail.spool import Spool, list_complete, run_lock
from scanmail.untrusted import one_line
from scanmail.watcher import FolderWatch, Stop, Workers, held_lock

log = logging.getLogger(__name__)

IDLE_CLOSE = 10.0  # seconds without mail before a worker closes its relay connection


class ForwardService:
    """The watch loop over outgoing, and the workers that deliver its files."""

    def __init__(self, config: Config, stop: Stop) -> None:
        self.config = config
        self.stop = stop
        self.spool = Spool(config.spool_dir)
        self.forwarder = Forwarder(config)
        self.sweep_every = config.fwd_interval
        self.relay_down = ""
        self.error: GatewayError | None = None
        self.transports: list[Transport] = []
        self.events: EventLog | None = None
        self.watch: FolderWatch | None = None

    def serve(self) -> None:
        """Deliver outgoing until stop is set; raise the spool error that stopped it, if any."""
        self.spool.check()
        lock = self.spool.var / LOCK_NAME
        with held_lock(lambda: run_lock(lock), self.stop, "scanmail-fwd") as held:
            if not held:
                return
            with FolderWatch(self.spool.outgoing, self.stop) as watch, \
                    EventLog(self.config.var_dir) as events:
                self.watch, self.events = watch, events
                count = max(1, self.config.fwd_concurrency)
                self.transports = [open_transport(self.config) for _ in range(count)]
                log.info("watching %s (sweep every %.0f s)", self.spool.outgoing,
                         self.sweep_every)
                workers = Workers(count, self._work, "fwd", self._idle, IDLE_CLOSE)
                try:
                    self._loop(watch, workers)
                finally:
                    workers.stop()
        if self.error is not None:
            raise self.error

    def _loop(self, watch: FolderWatch, workers: Workers) -> None:
        next_sweep = 0.0  # monotonic
        retry_at = 0.0  # monotonic: with the relay down, the next plain pass
        down = ""
        while not self.stop.is_set():
            now = time.monotonic()
            if self.relay_down and not down:
                down = self.relay_down
                log.warning("relay down, mail waits in outgoing: %s", one_line(down))
                retry_at = now + self.sweep_every
            if down:
                if workers.busy == 0 and now >= retry_at:
                    report = self.forwarder.run_pass(stop=self.stop)
                    if report.relay_down:
                        retry_at = time.monotonic() + self.sweep_every
                    else:
                        log.warning("relay reachable again")
                        down = self.relay_down = ""
                        next_sweep = 0.0
                        continue
                # While workers finish their last try, look again soon; else at retry_at.
                watch.wait(0.2 if workers.busy else max(0.0, retry_at - time.monotonic()))
                continue
            if now >= next_sweep:
                next_sweep = now + self._sweep(workers)
            arrivals = watch.wait(max(0.0, next_sweep - time.monotonic()))
            if arrivals.overflow:
                log.warning("inotify queue overflow on %s: sweeping", self.spool.outgoing)
                next_sweep = 0.0
            for name in arrivals.names:
                if watch.is_ready(name):
                    workers.offer(name)

    def _sweep(self, workers: Workers) -> float:
        """Offer every file whose retry time has come; seconds until the next sweep."""
        now = self.forwarder.clock()
        files = list_complete(self.spool.outgoing)
        self.forwarder.retries.prune({path.name for path in files})
        wait = self.sweep_every
        for path in files:
            next_try = self.forwarder.retries.load(path).next_try
            if next_try <= now:
                workers.offer(path.name)
            else:
                wait = min(wait, next_try - now)
        return max(wait, 0.05)

    def _work(self, worker: int, name: str) -> None:
        if self.relay_down or self.events is None:
            return  # stays in outgoing for the pass after the outage
        path = self.spool.outgoing / name
        if self.forwarder.retries.load(path).next_try > self.forwarder.clock():
            return  # not due yet: the sweep wakes for it
        try:
            self.forwarder.forward(path, self.transports[worker], self.events, PassReport())
        except RelayDown as exc:
            self.relay_down = str(exc) or "relay unreachable"
            self._nudge()
        except GatewayError as exc:  # a spool write failed: stop the service
            log.error("%s", exc)
            self.error = self.error or exc
            self.stop.set()

    def _idle(self, worker: int) -> None:
        self.transports[worker].close()

    def _nudge(self) -> None:
        if self.watch is not None:
            self.watch.nudge()


def serve(config: Config, stop: Stop) -> None:
    """scanmail-fwd as a service until stop is set."""
    ForwardService(config, stop).serve()
