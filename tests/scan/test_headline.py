"""The summary line of a pass (PassSummary.headline), for a person at a terminal."""

from __future__ import annotations

from collections import Counter

from scanmail.scan.runner import PassSummary


def test_a_pass_with_deliveries_and_quarantines_counts_each_reason() -> None:
    summary = PassSummary(seen=5, reasons=Counter(clean=2, infected=2, banned=1))
    assert summary.headline() == (
        "scanmail: 5 messages: 2 delivered, 3 quarantined (banned 1, infected 2)")


def test_mail_left_in_incoming_says_why_on_one_safe_line() -> None:
    summary = PassSummary(seen=1, reasons=Counter(clean=1), left=2,
                          scanner_error="clamd: connection refused\n\x1b[2J")
    assert summary.headline() == (
        "scanmail: 3 messages: 1 delivered, 2 left in incoming (clamd: connection refused??[2J)")


def test_an_empty_incoming_and_a_single_message() -> None:
    assert PassSummary().headline() == "scanmail: 0 messages in incoming"
    one = PassSummary(seen=1, reasons=Counter(clean=1))
    assert one.headline() == "scanmail: 1 message: 1 delivered"
