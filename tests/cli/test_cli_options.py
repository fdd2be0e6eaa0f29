"""--config and -v in either place, and logs on stderr when there is no syslog socket."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import EnvWriter
from scanmail import logs
from scanmail.cli import scan


@pytest.mark.parametrize("args", [
    ["--config", "{env}", "quarantine", "list"],
    ["quarantine", "list", "--config", "{env}"],
    ["quarantine", "--config", "{env}", "list"],
    ["quarantine", "list", "-v", "--config", "{env}"],
    ["-v", "status", "--config", "{env}"],
])
def test_config_and_verbose_before_or_after_the_subcommand(
    write_env: EnvWriter, tmp_path: Path, args: list[str]
) -> None:
    env = write_env()
    moved = tmp_path / "elsewhere.env"
    moved.write_bytes(env.read_bytes())
    env.unlink()  # only --config can find the settings now
    argv = [str(moved) if arg == "{env}" else arg for arg in args]
    result = CliRunner().invoke(scan.main, argv, env={"SPOOL_DIR": None})
    assert "No such option" not in result.output
    assert result.exit_code in (0, 1), result.output  # status may need attention: not 78


def test_a_missing_config_after_the_subcommand_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    result = CliRunner().invoke(scan.main, ["quarantine", "list", "--config", str(missing)])
    assert result.exit_code == 78
    assert str(missing) in result.output


def test_no_syslog_socket_logs_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(logs, "SYSLOG_SOCKET", str(tmp_path / "no-dev-log"))
    logs.setup_logging("scanmail")
    try:
        logging.getLogger("scanmail").info("qid=x event=scan verdict=deliver")
        assert "scanmail: qid=x event=scan verdict=deliver" in capsys.readouterr().err
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
