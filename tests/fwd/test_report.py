"""The summary line of a forwarder run (PassReport.headline), for a person at a terminal."""

from __future__ import annotations

from scanmail.fwd.report import PassReport


def test_the_counts_always_show() -> None:
    assert PassReport(delivered=2).headline() == "scanmail-fwd: 2 sent, 0 deferred, 0 failed"
    assert PassReport(delivered=1, deferred=3, failed=1, waiting=2).headline() == (
        "scanmail-fwd: 1 sent, 3 deferred, 1 failed, 2 waiting for their retry time")


def test_an_unreachable_relay_is_named() -> None:
    report = PassReport(deferred=4, relay_down="127.0.0.1:25: [Errno 111] Connection refused")
    assert report.headline() == ("scanmail-fwd: 0 sent, 4 deferred, 0 failed; relay "
                                 "unreachable: 127.0.0.1:25: [Errno 111] Connection refused")


def test_a_second_pass_adds_up_and_a_held_lock_says_so() -> None:
    report = PassReport(delivered=1, queued=1)
    report.add(PassReport(delivered=1, failed=1, waiting=1))
    assert report.headline() == "scanmail-fwd: 2 sent, 0 deferred, 1 failed"
    assert PassReport(locked=True).headline() == (
        "scanmail-fwd: another scanmail-fwd is delivering; nothing done")
