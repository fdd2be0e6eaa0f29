"""Service mode (issue 11): inotify hands each file to the next stage, the sweep is the net.

Not timed: each wait is bounded, and "without the sweep" means with a sweep of an hour.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.mail import enqueue, folder_of, message
from helpers.smtp_sink import Sink
from scanmail.config import load_config
from scanmail.fwd import watch as fwd_watch
from scanmail.scan import OUTAGE_MARK
from scanmail.scan import watch as scan_watch
from scanmail.spool import Envelope, Spool, list_complete
from scanmail.watcher import Stop

SCAN = "from scanmail.cli.scan import main; main()"
FWD = "from scanmail.cli.fwd import main; main()"
WAIT = 60.0  # seconds any one wait may take, at most
HOUR = 3600.0


def wait_for(condition: Callable[[], bool], limit: float = WAIT) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as running:
        yield running


class Running:
    """A service in a thread of the test, stopped at the end as SIGTERM would."""

    def __init__(self, serve: Callable[[Stop], None]) -> None:
        self.stop = Stop()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(serve,))
        self.thread.start()

    def _run(self, serve: Callable[[Stop], None]) -> None:
        try:
            serve(self.stop)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive() and not self.errors


def in_outgoing(root: Path, path: Path) -> Callable[[], bool]:
    return lambda: folder_of(root, path.name) == ["outgoing"]


def test_a_message_renamed_into_incoming_is_taken_without_the_sweep(spool_root, write_env):
    config = load_config(write_env())
    first = enqueue(spool_root, message("before the start"))  # taken by the first sweep
    service = Running(lambda stop: scan_watch.serve(config, stop, HOUR))
    try:
        assert wait_for(in_outgoing(spool_root, first))
        later = [enqueue(spool_root, message(f"renamed in {i}")) for i in range(5)]
        assert all(wait_for(in_outgoing(spool_root, path)) for path in later)
    finally:
        service.close()


def test_a_file_put_there_by_hand_is_taken_by_the_sweep(spool_root, write_env):
    config = load_config(write_env())
    service = Running(lambda stop: scan_watch.serve(config, stop, 0.5))
    try:
        # A hard link is an IN_CREATE, which the watch does not ask for: only the sweep sees it.
        built = Spool(spool_root).write("tmp", Envelope("a@ext.example", ("b@corp.example",)),
                                        [message("by hand")])
        by_hand = spool_root / "incoming" / built.name
        os.link(built, by_hand)
        built.unlink()
        assert wait_for(in_outgoing(spool_root, by_hand))
    finally:
        service.close()


def test_a_missed_event_loses_nothing(spool_root, write_env, private_clamd):
    """Mail that came while nothing watched, or whose event the service had to drop
    (the scanner gave no answer), is taken by a later sweep."""
    config = load_config(write_env(CLAMD_SOCKET=str(private_clamd.socket)))
    early = [enqueue(spool_root, message(f"while stopped {i}")) for i in range(3)]
    service = Running(lambda stop: scan_watch.serve(config, stop, HOUR))
    try:
        assert all(wait_for(in_outgoing(spool_root, path)) for path in early)
        private_clamd.stop()
        held = enqueue(spool_root, message("scanner down"))
        assert wait_for(lambda: (spool_root / "var" / OUTAGE_MARK).exists())
        private_clamd.start()
        # The event was dropped while the scanner was down: the sweep after the pause.
        assert wait_for(in_outgoing(spool_root, held))
    finally:
        service.close()
    assert list_complete(spool_root / "incoming") == []


def test_once_beside_the_service_says_the_lock_is_held(spool_root, write_env):
    env = write_env()
    config = load_config(env)
    service = Running(lambda stop: scan_watch.serve(config, stop, HOUR))
    try:
        first = enqueue(spool_root, message("one"))
        assert wait_for(in_outgoing(spool_root, first))
        done = subprocess.run([sys.executable, "-c", SCAN, "--config", str(env), "--once"],
                              capture_output=True, timeout=WAIT, check=False)
        assert done.returncode == 0 and b"lock" in done.stderr
        second = enqueue(spool_root, message("two"))
        assert wait_for(in_outgoing(spool_root, second))
    finally:
        service.close()


def queue_outgoing(root: Path, token: str) -> Path:
    body = f"Subject: {token}\r\nX-Token: {token}\r\n\r\nhello\r\n".encode()
    return Spool(root).write("outgoing", Envelope("a@ext.example", ("b@corp.example",)), [body])


def tokens(sink: Sink) -> list[str]:
    found = []
    for received in list(sink.messages):
        for line in received.content.split(b"\r\n"):
            if line.startswith(b"X-Token: "):
                found.append(line[9:].decode())
    return found


def test_the_forwarder_delivers_as_a_file_lands_and_keeps_its_connection(
        spool_root, write_env, sink):
    config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port),
                                   FWD_INTERVAL=str(HOUR), FWD_CONCURRENCY="1"))
    service = Running(lambda stop: fwd_watch.serve(config, stop))
    try:
        first = queue_outgoing(spool_root, "t0")
        assert wait_for(lambda: not first.exists())  # the first sweep, or the event
        for i in range(1, 6):
            path = queue_outgoing(spool_root, f"t{i}")
            assert wait_for(lambda p=path: not p.exists())  # type: ignore[misc]
    finally:
        service.close()
    assert tokens(sink) == [f"t{i}" for i in range(6)]
    assert sink.handler.connections == 1  # one session for the whole stream of mail


def test_the_forwarder_keeps_the_retry_delay(spool_root, write_env, sink):
    sink.handler.data_replies = ["451 4.3.0 try later"]
    config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port),
                                   FWD_INTERVAL=str(HOUR)))
    service = Running(lambda stop: fwd_watch.serve(config, stop))
    try:
        deferred = queue_outgoing(spool_root, "later")
        state = spool_root / "var" / "fwd" / f"{deferred.name}.json"
        assert wait_for(state.exists)
        following = queue_outgoing(spool_root, "now")
        assert wait_for(lambda: not following.exists())
    finally:
        service.close()
    assert deferred.exists() and tokens(sink) == ["now"]  # not retried before its minute


def test_sigterm_stops_the_scanner_mid_burst_losing_nothing(spool_root, write_env):
    env = write_env()
    count = 120
    paths = [enqueue(spool_root, message(f"burst {i}")) for i in range(count)]
    process = subprocess.Popen([sys.executable, "-c", SCAN, "--config", str(env), "--watch"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: len(list_complete(spool_root / "outgoing")) >= 5)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err.decode()
    places = [folder_of(spool_root, path.name) for path in paths]
    assert all(len(place) == 1 for place in places)  # each whole in exactly one folder
    assert any(place == ["incoming"] for place in places), "the burst ended before SIGTERM"
    done = subprocess.run([sys.executable, "-c", SCAN, "--config", str(env), "--once"],
                          capture_output=True, timeout=WAIT * 2, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert all(folder_of(spool_root, path.name) == ["outgoing"] for path in paths)
    assert len(os.listdir(spool_root / "outgoing")) == count


def test_sigterm_stops_the_forwarder_mid_burst_nothing_lost_or_twice(
        spool_root, write_env, sink):
    env = write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port))
    count = 300
    names = [f"b{i}" for i in range(count)]
    for name in names:
        queue_outgoing(spool_root, name)
    process = subprocess.Popen([sys.executable, "-c", FWD, "--config", str(env)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: len(sink.messages) >= 5)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err.decode()
    delivered = tokens(sink)
    left = len(list_complete(spool_root / "outgoing"))
    assert len(delivered) == len(set(delivered)) and len(delivered) + left == count
    assert left > 0, "the burst ended before SIGTERM"
    done = subprocess.run([sys.executable, "-c", FWD, "--config", str(env), "--once"],
                          capture_output=True, timeout=WAIT * 2, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(tokens(sink)) == sorted(names)
