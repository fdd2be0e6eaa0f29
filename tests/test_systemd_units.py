"""The systemd units in etc/systemd: policy checks, and `systemd-analyze verify` when present."""

from __future__ import annotations

import re
import shutil
import subprocess
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "etc" / "systemd"
BIN = "/usr/local/bin/"
SPOOL = "/var/spool/smtpd"
SERVICE_USER = "scanmail"
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
    "ProtectHome": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes",
}
EXPOSURE_MAX = 20  # systemd-analyze security's scale x10: 2.0 and below is "OK"

Unit = dict[str, dict[str, list[str]]]


def parse(path: Path) -> Unit:
    """A unit file as {section: {key: [values]}} (keys may repeat)."""
    unit: Unit = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            unit.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        unit[section].setdefault(key.strip(), []).append(value.strip())
    return unit


def services() -> dict[str, Unit]:
    return {path.name: parse(path) for path in sorted(UNITS.glob("*.service"))}


def timers() -> dict[str, Unit]:
    return {path.name: parse(path) for path in sorted(UNITS.glob("*.timer"))}


def test_the_issue_s_units_are_all_there():
    names = {path.name for path in UNITS.iterdir()}
    assert {"scanmail-smtpd.service", "scanmail-fwd.service", "scanmail.service",
            "sigupdate.timer", "sigupdate.service", "daysumm.timer",
            "daysumm.service"} <= names


@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_runs_as_the_service_user_with_hardening(name):
    service = services()[name]["Service"]
    assert service["User"] == [SERVICE_USER] and service["Group"] == [SERVICE_USER]
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{name}: {key}"
    assert SPOOL in service["ReadWritePaths"]


@pytest.mark.parametrize("name", sorted(services()))
def test_only_the_receiver_holds_a_capability(name):
    service = services()[name]["Service"]
    if name == "scanmail-smtpd.service":
        assert service["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
        assert service["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    else:
        assert service["CapabilityBoundingSet"] == [""]
        assert service.get("AmbientCapabilities", [""]) == [""]


@pytest.mark.parametrize("name", sorted(services()))
def test_every_service_starts_a_command_this_package_installs(name):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    [command] = services()[name]["Service"]["ExecStart"]
    program = command.split()[0]
    assert program.startswith(BIN) and program[len(BIN):] in scripts


@pytest.mark.parametrize("name", sorted(timers()))
def test_every_timer_starts_a_oneshot_service_of_its_name(name):
    service = services()[name.replace(".timer", ".service")]
    assert service["Service"]["Type"] == ["oneshot"]
    assert "Install" not in service  # started by the timer only
    assert timers()[name]["Install"]["WantedBy"] == ["timers.target"]


def test_the_daily_summary_runs_just_after_midnight_for_yesterday():
    assert timers()["daysumm.timer"]["Timer"]["OnCalendar"] == ["*-*-* 00:05:00"]
    [command] = services()["daysumm.service"]["Service"]["ExecStart"]
    assert command.endswith("daysumm --yesterday")


def test_the_scanner_service_is_the_watch_loop():
    [command] = services()["scanmail.service"]["Service"]["ExecStart"]
    assert command == f"{BIN}scanmail --watch"


@pytest.fixture
def runnable_units(tmp_path: Path) -> list[Path]:
    """A copy of the units whose ExecStart points at this environment's installed commands.

    verify checks that every ExecStart program exists and is executable; the units name
    /usr/local/bin, which a test machine need not have.
    """
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing (apt-get install systemd)")
    scripts = Path(sysconfig.get_path("scripts"))
    copies = []
    for path in sorted(UNITS.iterdir()):
        text = path.read_text()
        for program in set(re.findall(re.escape(BIN) + r"[\w.-]+", text)):
            installed = scripts / program[len(BIN):]
            assert installed.exists(), f"{installed} missing: pip install -e ."
            text = text.replace(program, str(installed))
        copy = tmp_path / path.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def test_units_pass_systemd_analyze_verify(runnable_units):
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, runnable_units)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    # verify exits 0 on some problems (an unknown key is only a warning): no output at all
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_services_are_well_hardened_by_systemd_s_own_measure(runnable_units):
    for unit in (path for path in runnable_units if path.suffix == ".service"):
        done = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", f"--threshold={EXPOSURE_MAX}",
             "--no-pager", str(unit)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stdout.splitlines()[-1:]
