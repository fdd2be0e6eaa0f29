"""The closed sets shared by the producers of events and their readers."""

from __future__ import annotations

from scanmail.daysumm import queries
from scanmail.events import KINDS
from scanmail.verdict import EventKind, SigOutcome


def test_daysumm_counts_only_sigupdate_outcomes_a_producer_can_write() -> None:
    written = {outcome.value for outcome in SigOutcome}
    assert set(queries.SIG_GOOD) <= written and set(queries.SIG_BAD) <= written
    assert "ok" not in queries.SIG_GOOD  # counted once, written by no one (issue 9)
    assert not set(queries.SIG_GOOD) & set(queries.SIG_BAD)


def test_the_event_log_knows_every_kind() -> None:
    assert set(KINDS) == {kind.value for kind in EventKind}
    assert f"{EventKind.SCAN}" == "scan"  # written into SQL and log lines as its value
