"""clamd's effective limits: a private clamd with a low StreamMaxLength, read as clamd does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import EnvWriter
from helpers.mail import message
from scanmail.clamd_limits import parse_size, read_limits
from scanmail.cli import scan
from scanmail.testing import PrivateClamd


@pytest.fixture
def small_clamd(tmp_path_factory: pytest.TempPathFactory, clamd_db: Path
                ) -> Iterator[PrivateClamd]:
    """clamd whose StreamMaxLength is 1M; a later 64M line, as the README once said to append."""
    server = PrivateClamd(tmp_path_factory.mktemp("clamd-small"), db_dir=clamd_db)
    server.configure()
    text = server.conf.read_text().replace("StreamMaxLength 300M", "StreamMaxLength 1M")
    server.conf.write_text(text + "StreamMaxLength 64M\n")
    server.start()
    yield server
    server.stop()


def test_first_value_wins_as_in_clamd(tmp_path: Path) -> None:
    conf = tmp_path / "clamd.conf"
    conf.write_text("# StreamMaxLength 1G\nStreamMaxLength 25M\nMaxFileSize 512K\n"
                    "StreamMaxLength 64M\n")
    limits = read_limits(conf)
    assert (limits["StreamMaxLength"].value, limits["StreamMaxLength"].line) == (25 << 20, 2)
    assert limits["MaxFileSize"].value == 512 << 10
    assert (limits["MaxScanSize"].value, limits["MaxScanSize"].line) == (400 << 20, 0)
    assert parse_size("2G") == 2 << 30 and parse_size("x") is None


def test_status_and_check_warn_and_the_unchecked_reason_names_the_cause(
    write_env: EnvWriter, small_clamd: PrivateClamd, tmp_path: Path
) -> None:
    env = write_env(CLAMD_SOCKET=str(small_clamd.socket), CLAMD_CONF=str(small_clamd.conf))
    runner = CliRunner()
    status = runner.invoke(scan.main, ["status", "--config", str(env)])
    warning = next(line for line in status.output.splitlines() if "StreamMaxLength" in line)
    assert warning.startswith("! clamd StreamMaxLength is 1")
    assert f"{small_clamd.conf} line" in warning and "edit that line" in warning
    big = tmp_path / "big.eml"
    big.write_bytes(message("big", attachments=[("data.bin", b"\0" * (2 << 20))]))
    check = runner.invoke(scan.main, ["check", "--config", str(env), str(big)])
    assert check.exit_code == 1, check.output
    assert "unchecked" in check.output
    verdict = [line for line in check.output.splitlines() if "warning:" not in line]
    assert any("StreamMaxLength" in line for line in verdict), check.output  # the reason too
    assert "warning: clamd StreamMaxLength is 1" in check.output


def test_no_warning_when_the_limits_are_high_enough(
    write_env: EnvWriter, clamd_server: PrivateClamd
) -> None:
    env = write_env(CLAMD_CONF=str(clamd_server.conf))
    status = CliRunner().invoke(scan.main, ["status", "--config", str(env)])
    assert "StreamMaxLength" not in status.output
