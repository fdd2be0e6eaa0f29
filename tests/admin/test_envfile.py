"""scanmail.env edited by setup: the line that sets a setting replaced, nothing appended twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanmail.admin.envfile import assign, read, render, values
from scanmail.admin.init import render_env_example
from scanmail.errors import ConfigError, SetupError


def test_the_line_setting_it_is_replaced_and_the_rest_kept() -> None:
    text = ("# my gateway\nRELAY_HOST=old.corp.example  # the old one\nMAX_HOPS=20\n"
            "export RELAY_PORT=25\n")
    new, changed = assign(text, {"RELAY_HOST": "mail.corp.example", "RELAY_PORT": "2525"})
    assert changed == ["RELAY_HOST", "RELAY_PORT"]
    assert new == ("# my gateway\nRELAY_HOST=mail.corp.example\nMAX_HOPS=20\n"
                   "RELAY_PORT=2525\n")


def test_a_value_already_in_effect_is_left_alone() -> None:
    text = "RELAY_HOST='mail.corp.example'\nLOCAL_DOMAINS='a.example b.example'\n"
    new, changed = assign(text, {"RELAY_HOST": "mail.corp.example",
                                 "LOCAL_DOMAINS": "a.example b.example"})
    assert (new, changed) == (text, [])


def test_a_later_line_that_would_win_is_commented_out() -> None:
    text = "RELAY_HOST=one\nMAX_HOPS=20\nRELAY_HOST=two\n"
    new, changed = assign(text, {"RELAY_HOST": "three"})
    assert new.splitlines() == ["RELAY_HOST=three", "MAX_HOPS=20",
                                "# (replaced by scanmail setup, line 1) RELAY_HOST=two"]
    assert values(new)["RELAY_HOST"] == "three" and changed == ["RELAY_HOST"]


def test_a_new_setting_goes_after_its_commented_default() -> None:
    example = render_env_example()
    new, changed = assign(example, {"RELAY_HOST": "mail.corp.example"})
    lines = new.splitlines()
    at = lines.index("#RELAY_HOST=localhost")
    assert lines[at + 1] == "RELAY_HOST=mail.corp.example"
    assert len(lines) == len(example.splitlines()) + 1
    assert changed == ["RELAY_HOST"]


def test_a_setting_no_line_mentions_is_appended_once() -> None:
    new, _ = assign("MAX_HOPS=20", {"FRESHCLAM_COMMAND": "", "LOCAL_DOMAINS": "a.example"})
    assert new == "MAX_HOPS=20\nFRESHCLAM_COMMAND=''\nLOCAL_DOMAINS=a.example\n"
    again, changed = assign(new, {"FRESHCLAM_COMMAND": "", "LOCAL_DOMAINS": "a.example"})
    assert (again, changed) == (new, [])


def test_a_new_file_reads_back_as_written() -> None:
    settings = {"SPOOL_DIR": "/var/spool/smtpd", "LOCAL_DOMAINS": "a.example .b.example",
                "FRESHCLAM_COMMAND": "", "ADMIN_EMAIL": "ops+gw@a.example"}
    text = render(settings, {"LOCAL_DOMAINS": "the domain of gw.a.example"})
    assert values(text) == settings
    assert "# the domain of gw.a.example\nLOCAL_DOMAINS='a.example .b.example'\n" in text


def test_a_quote_cannot_break_out_of_a_value() -> None:
    with pytest.raises(ConfigError, match="no quotes"):
        render({"HOSTNAME": "gw'\nSCANNER=command"}, {})


def test_a_link_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("RELAY_HOST=x\n")
    (tmp_path / "scanmail.env").symlink_to(secret)
    with pytest.raises(SetupError, match="symbolic link"):
        read(tmp_path / "scanmail.env")
    assert read(tmp_path / "missing.env") is None
