"""One sanitizer for every sink: the log line, the record, the mail, the terminal, the page."""

from __future__ import annotations

import pytest

from scanmail import untrusted
from scanmail.events import Event

HOSTILE = "invoice\u202efdp.exe\x1b[31m\u200b\x85caf\udce9"
SAFE = "invoice?fdp.exe?[31m??caf\ufffd"


def test_every_sink_shows_the_same_visible_text() -> None:
    assert untrusted.one_line(HOSTILE) == SAFE
    assert untrusted.for_terminal(HOSTILE) == SAFE
    assert untrusted.for_html(HOSTILE + '<b a="1">') == SAFE + "&lt;b a=&quot;1&quot;&gt;"


def test_the_syslog_line_shows_a_right_to_left_override_as_a_question_mark() -> None:
    line = Event(kind="scan", qid="q1", sender="a\u202e@x", reason="banned",
                 detail="name\u202eexe.pdf").log_line()
    assert "\u202e" not in line and "a?@x" in line and "name?exe.pdf" in line


@pytest.mark.parametrize("limit", [1, 5, 200])
def test_long_values_end_in_an_ellipsis_within_the_limit(limit: int) -> None:
    text = untrusted.one_line("x" * 500, limit)
    assert len(text) == limit and text.endswith("\u2026")


def test_ordinary_text_is_unchanged() -> None:
    text = "Re: Angebot für Jürgen – 東京 (2 files) <a@b.example>"
    assert untrusted.one_line(text, 500) == text
