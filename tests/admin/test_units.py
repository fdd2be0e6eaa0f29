"""The units setup writes: the shipped ones with this install's paths, user and spool."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from scanmail.admin.units import (
    BACKUP_SUFFIX,
    command_line,
    hidden_from_services,
    install,
    render,
    service_section,
    shipped,
)

REPO_UNITS = Path(__file__).resolve().parents[2] / "etc" / "systemd"


def rendered(bin_dir: Path, spool: Path) -> dict[str, str]:
    return {name: render(name, text, bin_dir=bin_dir, user="mailscan", group="mailgrp",
                         spool=spool, sig_db_dir=Path("/srv/clamav"))
            for name, text in shipped().items()}


def test_every_unit_of_etc_systemd_ships_with_the_package() -> None:
    assert sorted(shipped()) == sorted(path.name for path in REPO_UNITS.iterdir())


def test_paths_user_and_spool_are_the_answers() -> None:
    units = rendered(Path("/opt/scanmail/bin"), Path("/srv/spool"))
    for name, text in units.items():
        assert "/usr/local/bin" not in text and "/var/spool/smtpd" not in text, name
        if not name.endswith(".service"):
            continue
        service = service_section(text)
        assert service["User"] == ["mailscan"] and service["Group"] == ["mailgrp"]
        assert "/srv/spool" in service["ReadWritePaths"]
        argv, environment = command_line(text)
        assert argv[0].startswith("/opt/scanmail/bin/") and environment == {
            "SPOOL_DIR": "/srv/spool"}
    assert command_line(units["scanmail.service"])[0] == ["/opt/scanmail/bin/scanmail",
                                                          "--watch"]
    assert "-/srv/clamav" in service_section(units["sigupdate.service"])["ReadWritePaths"]


def test_only_what_differs_is_written_and_the_old_file_kept(tmp_path: Path) -> None:
    units = rendered(Path("/opt/scanmail/bin"), Path("/srv/spool"))
    first = install(tmp_path, units)
    assert first.changed and "scanmail-smtpd.service" in first.line
    stamps = {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    second = install(tmp_path, units)
    assert not second.changed and "already as they should be" in second.line
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()} == stamps
    mine = tmp_path / "scanmail.service"
    mine.write_text(mine.read_text() + "Nice=5\n")  # an edit in place, not in a drop-in
    third = install(tmp_path, units)
    assert third.line.endswith(f"wrote scanmail.service (the previous scanmail.service kept "
                               f"as NAME{BACKUP_SUFFIX})")
    assert (tmp_path / f"scanmail.service{BACKUP_SUFFIX}").read_text().endswith("Nice=5\n")
    assert mine.read_text() == units["scanmail.service"]


def test_a_spool_the_sandbox_hides_is_warned_about() -> None:
    assert "PrivateTmp=yes" in (hidden_from_services(Path("/tmp/spool")) or "")
    assert "ProtectHome=yes" in (hidden_from_services(Path("/home/gw/spool")) or "")
    assert hidden_from_services(Path("/var/spool/smtpd")) is None


def test_written_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing (apt-get install systemd)")
    units = rendered(Path(sysconfig.get_path("scripts")), Path("/srv/spool"))
    install(tmp_path, units)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, sorted(tmp_path.iterdir()))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
