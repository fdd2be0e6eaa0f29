"""Service mode: a spool folder watched with inotify, and the workers that take its files.

The rename (or the 0750 chmod) of a complete file into a folder is the signal (issue 11):
the stages stay separate processes sharing nothing but the spool. inotify (through
inotify-simple, a ctypes wrapper of the three system calls, no dependencies, whose file
descriptor select() can wait on beside a stop pipe) says which name arrived; a slow
sweep of the folder stays the safety net for what inotify cannot promise (a full event
queue, IN_Q_OVERFLOW; a file put there before the watch began). Idle, the service sleeps
in select() with no timeout shorter than the sweep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as inflags

from scanmail.errors import SpoolError
from scanmail.spool import is_complete, is_spool_name

log = logging.getLogger(__name__)

# A file renamed in (our writers, smtpd, the Obtuse tools), closed after writing in
# place, or given the 0750 completion mode in place (route.retire, Obtuse smtpd).
ARRIVAL = inflags.MOVED_TO | inflags.CLOSE_WRITE | inflags.ATTRIB
LOCK_RETRY = 1.0  # seconds between tries while another process holds the run lock


class Stop(threading.Event):
    """A stop request that also wakes a select(): safe to set from a signal handler."""

    def __init__(self) -> None:
        super().__init__()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)

    def set(self) -> None:
        super().set()
        with contextlib.suppress(BlockingIOError):  # already woken: the pipe is full
            os.write(self._write, b"x")

    def clear(self) -> None:
        super().clear()
        with contextlib.suppress(BlockingIOError):
            os.set_blocking(self._read, False)
            while os.read(self._read, 512):
                pass


@dataclass
class Arrivals:
    """What one wait saw: names that may have arrived, and whether inotify lost some."""

    names: list[str] = field(default_factory=list)
    overflow: bool = False


class FolderWatch:
    """Names arriving in one folder, as inotify reports them."""

    def __init__(self, folder: Path, stop: Stop) -> None:
        self.folder = folder
        self.stop = stop
        self.nudged = Stop()  # another thread has news for the waiter (scanner down, ...)
        self.inotify = INotify()
        try:
            self.inotify.add_watch(folder, ARRIVAL | inflags.ONLYDIR)
        except OSError as exc:
            self.inotify.close()
            raise SpoolError(f"{folder}: cannot watch: {exc.strerror}") from exc

    def close(self) -> None:
        self.inotify.close()
        self.nudged.close()

    def __enter__(self) -> FolderWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, timeout: float | None) -> Arrivals:
        """Sleep until something arrives, the stop is set, or timeout seconds pass."""
        seen = Arrivals()
        if self.stop.is_set():
            return seen
        ready, _, _ = select.select([self.inotify, self.stop, self.nudged], [], [], timeout)
        if self.nudged in ready:
            self.nudged.clear()
        if self.inotify in ready:
            for event in self.inotify.read(timeout=0):
                if event.mask & inflags.Q_OVERFLOW:
                    seen.overflow = True
                elif event.name and event.name not in seen.names:
                    seen.names.append(event.name)
        return seen

    def nudge(self) -> None:
        """Wake the waiter early, from another thread."""
        self.nudged.set()

    def is_ready(self, name: str) -> bool:
        """The name is a complete spool file in the folder (readers skip the rest)."""
        if not is_spool_name(name):
            return False
        try:
            return is_complete(os.stat(self.folder / name, follow_symlinks=False).st_mode)
        except OSError:
            return False


class Workers:
    """N threads taking names from one queue; a name is never queued or worked on twice.

    stop() drops the names still queued (they stay where they are in the spool, for the
    next start) and waits for the ones being worked on: nothing lost, nothing twice.
    idle(worker) is called when a worker's queue stays empty for idle_after seconds (the
    forwarder closes its SMTP connection then), after which it sleeps without a timeout.
    """

    def __init__(
        self, count: int, work: Callable[[int, str], None], name: str,
        idle: Callable[[int], None] | None = None, idle_after: float = 5.0,
    ) -> None:
        self.work = work
        self.idle = idle
        self.idle_after = idle_after
        self.todo: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.taken: set[str] = set()  # queued or being worked on
        self.stopping = False
        self.threads = [
            threading.Thread(target=self._run, args=(n,), name=f"{name}-{n}", daemon=True)
            for n in range(max(1, count))
        ]
        for thread in self.threads:
            thread.start()

    def offer(self, name: str) -> bool:
        """Queue name unless it is queued or being worked on already."""
        with self.lock:
            if self.stopping or name in self.taken:
                return False
            self.taken.add(name)
        self.todo.put(name)
        return True

    @property
    def busy(self) -> int:
        """Names queued or being worked on."""
        with self.lock:
            return len(self.taken)

    def stop(self) -> None:
        """Drop what is queued, let the work in progress finish, end the threads."""
        with self.lock:
            self.stopping = True
        for _ in self.threads:
            self.todo.put(None)
        for thread in self.threads:
            thread.join()

    def _next(self, worker: int) -> str | None:
        try:
            return self.todo.get(timeout=self.idle_after) if self.idle else self.todo.get()
        except queue.Empty:
            assert self.idle is not None
            self.idle(worker)
            return self.todo.get()

    def _run(self, worker: int) -> None:
        while True:
            name = self._next(worker)
            if name is None:
                break
            with self.lock:
                dropped = self.stopping
            try:
                if not dropped:
                    self.work(worker, name)
            except Exception:
                log.exception("%s: unexpected error; the file stays where it is", name)
            finally:
                with self.lock:
                    self.taken.discard(name)
        if self.idle:
            self.idle(worker)


@contextlib.contextmanager
def held_lock(
    take: Callable[[], contextlib.AbstractContextManager[bool]], stop: Stop, what: str,
) -> Iterator[bool]:
    """A run lock held for a service's life: waits while a cron run holds it.

    Yields False if stopped before the lock came free.
    """
    said = False
    while not stop.is_set():
        with take() as held:
            if held:
                yield True
                return
        if not said:
            log.info("%s: waiting for the run lock (a cron run holds it)", what)
            said = True
        stop.wait(LOCK_RETRY)
    yield False
