"""clamd.conf's limits raised in place: the line clamd reads edited, never one appended."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scanmail.admin.clamdconf import BACKUP_SUFFIX, raise_limits, settle, wanted
from scanmail.clamd_limits import parse_directives, read_limits
from scanmail.errors import SetupError

DEBIAN = Path(__file__).resolve().parents[1] / "data" / "clamd.conf.debian12"
MB = 1 << 20


def counts(text: str) -> dict[str, int]:
    names = ("StreamMaxLength", "MaxFileSize", "MaxScanSize", "AlertExceedsMax")
    return {name: sum(line.split()[:1] == [name] for line in text.splitlines())
            for name in names}


def test_the_readme_s_values_for_50_megabytes() -> None:
    assert wanted(50 * MB) == {"StreamMaxLength": "64M", "MaxFileSize": "64M",
                               "MaxScanSize": "256M", "AlertExceedsMax": "yes"}
    assert wanted(10 * MB)["StreamMaxLength"] == "16M"
    assert wanted(8 << 30)["MaxScanSize"] == "4095M"  # clamd's ceiling


def test_debian_s_lines_are_edited_where_they_are() -> None:
    text = DEBIAN.read_text()
    before = parse_directives(text)
    new, changes = raise_limits(text, wanted(50 * MB))
    after = parse_directives(new)
    for name, value in (("StreamMaxLength", "64M"), ("MaxFileSize", "64M"),
                        ("MaxScanSize", "256M")):
        assert after[name] == (value, before[name][1])  # same line, new value
    assert after["AlertExceedsMax"][0] == "yes"
    assert counts(new) == {**counts(text), "AlertExceedsMax": 1}
    assert len(new.splitlines()) == len(text.splitlines()) + 1
    assert changes == ["StreamMaxLength 25M -> 64M (line 79)", "MaxFileSize 25M -> 64M (line 68)",
                       "MaxScanSize 100M -> 256M (line 67)", "AlertExceedsMax yes added"]


def test_the_first_value_is_the_one_edited_and_a_later_one_left(tmp_path: Path) -> None:
    text = "StreamMaxLength 25M\nMaxFileSize 1G\nStreamMaxLength 300M\nAlertExceedsMax no\n"
    new, changes = raise_limits(text, wanted(50 * MB))
    assert new.splitlines() == ["StreamMaxLength 64M", "MaxFileSize 1G",
                                "StreamMaxLength 300M", "AlertExceedsMax yes",
                                "MaxScanSize 256M"]
    assert changes == ["StreamMaxLength 25M -> 64M (line 1)", "MaxScanSize 256M added",
                       "AlertExceedsMax no -> yes (line 4)"]
    conf = tmp_path / "clamd.conf"
    conf.write_text(new)
    assert read_limits(conf)["StreamMaxLength"].value == 64 * MB


def test_a_file_edited_once_keeps_its_original_and_is_not_edited_again(tmp_path: Path) -> None:
    conf = tmp_path / "clamd.conf"
    shutil.copy(DEBIAN, conf)
    conf.chmod(0o640)
    first = settle(conf, 50 * MB, required=True)
    assert first.changed and "clamd must be restarted" in first.line
    backup = tmp_path / f"clamd.conf{BACKUP_SUFFIX}"
    assert backup.read_bytes() == DEBIAN.read_bytes()
    assert conf.stat().st_mode & 0o777 == 0o640
    edited = conf.read_bytes()
    second = settle(conf, 50 * MB, required=True)
    assert not second.changed and "already fit" in second.line
    assert conf.read_bytes() == edited
    third = settle(conf, 100 * MB, required=True)  # a larger MAX_MESSAGE_SIZE later
    assert third.changed and "the original kept" not in third.line
    assert backup.read_bytes() == DEBIAN.read_bytes()  # the first original, kept once


def test_a_missing_clamd_conf_is_said_or_refused(tmp_path: Path) -> None:
    assert not settle(tmp_path / "none.conf", 50 * MB, required=False).changed
    with pytest.raises(SetupError, match="no such file"):
        settle(tmp_path / "none.conf", 50 * MB, required=True)
