"""`scanmail quarantine list` in aligned columns: records of differing widths, hostile and
wide values, long ones cut with an ellipsis; through the real CLI on a real quarantine too."""

from __future__ import annotations

import unicodedata

from click.testing import CliRunner

from helpers.mail import enqueue, message
from scanmail.admin.listing import cells, clip, quarantine_lines
from scanmail.cli.scan import main
from scanmail.quarantine import Record
from scanmail.testing import eicar

NOW = 1_750_000_000.0


def record(qid: str, reason: str, sender: str, *, ago: float, size: int = 2048,
           viruses: tuple[str, ...] = (), rcpts: tuple[str, ...] = ("bob@corp.example",),
           attachments: tuple[str, ...] = (), detail: str = "") -> Record:
    return Record(qid=qid, reason=reason, time=NOW - ago, sender=sender, recipients=rcpts,
                  size=size, viruses=viruses, attachments=attachments, detail=detail)


def display_col(line: str, value: str) -> int:
    """The terminal column at which value starts in line (wide characters take two)."""
    before = line[: line.index(value)]
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in before)


def test_columns_line_up_whatever_the_widths() -> None:
    records = [
        record("smtpd3f9c0e1a2b4d", "infected", "a@x.example", ago=45,
               viruses=("Eicar-Test-Signature",)),
        record("smtpd3f9c0e1a2b4d-7k2q", "banned", "long.sender.name@mail.example.org",
               ago=3 * 86400 + 7200, size=48_213_000, attachments=("invoice.pdf.exe",),
               detail="'invoice.pdf.exe' matched matches.bad:3: filename=.*\\.exe"),
        record("smtpd0a", "encrypted", "", ago=600, size=12, detail="encrypted: secret.zip"),
    ]
    lines = quarantine_lines(records, NOW)
    assert lines == [
        "smtpd3f9c0e1a2b4d       45 s        infected   Eicar-Test-Signature   "
        "<a@x.example>                        bob@corp.example   2.0 KB",
        "smtpd3f9c0e1a2b4d-7k2q  3 days 2 h  banned     invoice.pdf.exe        "
        "<long.sender.name@mail.example.org>  bob@corp.example  46.0 MB",
        "smtpd0a                 10 min      encrypted  encrypted: secret.zip  "
        "<>                                   bob@corp.example     12 B",
    ]


def test_hostile_and_wide_values_are_made_visible_then_measured() -> None:
    records = [
        record("smtpd1", "infected", "ann@ext.example", ago=60,
               viruses=("Win.Test\u202efdp.exe",)),
        record("smtpd2", "banned", "\u7f8e\u7a7a@\u4f8b\u3048.jp", ago=60,
               attachments=("\u8acb\u6c42\u66f8.exe",),
               detail="'\u8acb\u6c42\u66f8.exe' matched matches.bad:1: filename=.*\\.exe"),
        record("smtpd3", "infected", "x\x1b[2J@ext.example", ago=60, viruses=("V",)),
    ]
    lines = quarantine_lines(records, NOW)
    assert "Win.Test?fdp.exe" in lines[0] and "\u202e" not in lines[0]
    assert "<x?[2J@ext.example>" in lines[2] and "\x1b" not in lines[2]
    # Each sender starts in the same terminal column, though the CJK names take 2 cells each.
    starts = {display_col(line, "<") for line in lines}
    assert len(starts) == 1
    recipients = {display_col(line, "bob@corp.example") for line in lines}
    assert len(recipients) == 1


def test_long_values_are_cut_with_an_ellipsis() -> None:
    many = tuple(f"user{n}@corp.example" for n in range(5))
    virus = "Win.Trojan.Agent-" + "X" * 60
    [line] = quarantine_lines([record("smtpd9", "infected", "s" * 70 + "@ext.example", ago=1,
                                      viruses=(virus,), rcpts=many)], NOW)
    assert ("Win.Trojan.Agent-" + "X" * 22 + "\u2026") in line
    assert "<" + "s" * 38 + "\u2026  " in line  # 40 cells with the bracket and the ellipsis
    assert "  user0@corp.example,user1@corp.example,u\u2026  " in line
    assert cells(clip("\u8acb\u6c42\u66f8\u8acb\u6c42", 5)) <= 5
    assert clip("short", 40) == "short"


def test_the_cli_lists_a_real_quarantine_aligned(spool_root, write_env) -> None:
    env = write_env()
    enqueue(spool_root, message("fun", attachments=[("joke.txt", eicar())]))
    enqueue(spool_root, message("invoice", attachments=[("invoice.pdf.exe", b"MZ")]),
            sender="someone.with.a.longer.address@outside.example")
    assert CliRunner().invoke(main, ["--config", str(env), "--once"]).exit_code == 0
    result = CliRunner().invoke(main, ["--config", str(env), "quarantine", "list"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert len({line.index("<") for line in lines}) == 1  # the senders line up
    assert len({line.index("bob@corp.example") for line in lines}) == 1
