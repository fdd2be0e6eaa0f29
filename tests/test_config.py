"""Configuration: one .env file, the environment over it, flags over both, exit 78."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scanmail.admin.init import create_spool, render_env_example
from scanmail.cli.scan import main
from scanmail.config import SETTINGS, Config, default_config_path, load_config
from scanmail.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_documented_ones(tmp_path):
    # From no file at all: a machine with scanmail installed (CI after scripts/install, a
    # gateway) has one at the default path, and its settings are not the defaults.
    config = Config.from_mapping({})
    assert default_config_path({}) == Path("/var/spool/smtpd/etc/scanmail.env")
    assert config.spool_dir == Path("/var/spool/smtpd")
    assert config.scanner == "clamd" and config.scan_policy == "all"
    assert config.clamd_socket == "/var/run/clamav/clamd.ctl"
    assert config.scanner_command[0] == "clamscan" and config.notify_sender is False
    assert config.relay_host == "localhost" and config.relay_port == 25
    assert config.local_domains == frozenset() and config.sig_max_age_days == 3


def test_env_file_then_environment_then_flags(tmp_path):
    env = tmp_path / "scanmail.env"
    env.write_text("SCAN_POLICY=suspect\nRELAY_PORT=2525\n# a comment\n")
    config = load_config(env, environ={"RELAY_PORT": "26", "PATH": "/usr/bin"})
    assert config.scan_policy == "suspect"  # from the file
    assert config.relay_port == 26  # the environment wins over the file
    assert config.with_overrides(relay_port=27).relay_port == 27  # flags win over both


@pytest.mark.parametrize(
    ("line", "named"),
    [("SCANER=clamd", "unknown setting SCANER"), ("SCAN_POLICY=some", "SCAN_POLICY"),
     ("RELAY_PORT=99999", "RELAY_PORT"), ("NOTIFY_SENDER=maybe", "NOTIFY_SENDER"),
     ("CLAMD_SOCKET=clamd.sock", "CLAMD_SOCKET"), ("ADMIN_EMAIL=root", "ADMIN_EMAIL"),
     ("SCANNER_VIRUS_REGEX=(", "SCANNER_VIRUS_REGEX"), ("MAX_MESSAGE_SIZE=lots", "MAX_")],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path, line, named):
    env = tmp_path / "scanmail.env"
    env.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(env, environ={})
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_cli_exits_78_on_a_bad_setting_and_a_bad_pattern(tmp_path):
    root = tmp_path / "spool"
    create_spool(root)
    env = root / "etc" / "scanmail.env"
    env.write_text(f"SPOOL_DIR={root}\nSCAN_WORKERS=zero\n")
    result = CliRunner().invoke(main, ["--config", str(env), "--once"])
    assert result.exit_code == 78 and "SCAN_WORKERS" in result.output
    env.write_text(f"SPOOL_DIR={root}\n")
    (root / "etc" / "matches.bad").write_text("# fine\nfilename=.*\\.exe$\nfilename=(unclosed\n")
    result = CliRunner().invoke(main, ["--config", str(env), "--once"])
    assert result.exit_code == 78
    assert "matches.bad:3" in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_explicit_config_file_is_a_config_error(tmp_path):
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "nope.env"), "--once"])
    assert result.exit_code == 78 and "not found" in result.output


def test_init_creates_the_hierarchy_and_never_overwrites_admin_files(tmp_path):
    root = tmp_path / "spool"
    result = CliRunner().invoke(main, ["init", "--spool", str(root)])
    assert result.exit_code == 0, result.output
    for name in ("incoming", "outgoing", "quarantine", "failed", "tmp", "etc", "bin", "var"):
        assert (root / name).is_dir() and (root / name).stat().st_mode & 0o777 == 0o700
    (root / "etc" / "matches.bad").write_text("filename=.*\\.mine$\n")
    CliRunner().invoke(main, ["init", "--spool", str(root)])
    assert (root / "etc" / "matches.bad").read_text() == "filename=.*\\.mine$\n"


def test_env_example_documents_every_setting():
    committed = (REPO / "etc" / "scanmail.env.example").read_text()
    assert committed == render_env_example()
    for setting in SETTINGS:
        assert f"#{setting.name}=" in committed
