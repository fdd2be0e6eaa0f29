"""The gateway's own name: never localhost when the host has another, and a warning when
the name in use will not do. Real /etc/hosts files, in a private mount and UTS namespace
(unshare, as root), so the resolver itself answers; no lookup is faked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scanmail.cli.scan import main
from scanmail.hostname import choose, warning

PRINT_DEFAULT = ("import socket; from scanmail.config import Config; "
                 "print(socket.getfqdn(), Config.from_mapping({}).hostname)")


def unshare_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "-u", "true"], capture_output=True, check=False)
    return probe.returncode == 0


def resolved_as(tmp_path: Path, hosts: str, name: str = "gw") -> tuple[str, str]:
    """(socket.getfqdn(), HOSTNAME's default) on a host called name with this /etc/hosts."""
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text(hosts)
    script = (f'hostname {name} && mount --bind "$1" /etc/hosts && '
              f'exec "$2" -c "{PRINT_DEFAULT}"')
    done = subprocess.run(
        ["unshare", "-m", "-u", "sh", "-c", script, "sh", str(hosts_file), sys.executable],
        capture_output=True, text=True, timeout=60, check=True,
    )
    fqdn, default = done.stdout.split()
    return fqdn, default


@pytest.mark.skipif(not unshare_works(), reason="needs root and unshare -m -u (namespaces)")
@pytest.mark.parametrize(("hosts", "fqdn", "expected"), [
    # Debian's installer on a host with no domain; getfqdn() says localhost.
    ("127.0.0.1 localhost gw\n", "localhost", "gw"),
    ("127.0.0.1 localhost.localdomain localhost gw\n", "localhost.localdomain", "gw"),
    # A proper entry: the full name wins, the first as the loopback one is passed over.
    ("127.0.0.1 localhost\n127.0.1.1 gw.corp.example gw\n", "gw.corp.example", "gw.corp.example"),
    ("127.0.0.1 localhost gw.corp.example gw\n", "gw.corp.example", "gw.corp.example"),
])
def test_the_default_is_never_localhost_while_the_host_has_another_name(
    tmp_path: Path, hosts: str, fqdn: str, expected: str
) -> None:
    assert resolved_as(tmp_path, hosts) == (fqdn, expected)


def test_choose_prefers_a_full_name_and_passes_over_loopback_names() -> None:
    assert choose(["localhost", "ip6-localhost", "gw"]) == "gw"
    assert choose(["localhost6.localdomain6", "gw", "gw.corp.example"]) == "gw.corp.example"
    assert choose(["localhost", ""]) == "localhost"  # nothing better: the warning says so
    assert choose([]) == "localhost"


@pytest.mark.parametrize(("name", "why"), [
    ("localhost", "a name for loopback"), ("localhost.localdomain", "a name for loopback"),
    ("gw", "no domain"),
])
def test_a_name_other_servers_cannot_use_is_warned_about(name: str, why: str) -> None:
    assert warning(name) == (
        f"this gateway's name is {name!r} ({why}), in its greeting, HELO, Received: and "
        "alerts; set HOSTNAME=mx.example.org (its full name) in scanmail.env")
    assert warning("gw.corp.example") is None


def test_check_and_status_warn_with_the_fix(write_env, tmp_path: Path) -> None:
    eml = tmp_path / "a.eml"
    eml.write_bytes(b"From: ann@ext.example\r\nSubject: hi\r\n\r\nhello\r\n")
    env = write_env(HOSTNAME="localhost")
    status = CliRunner().invoke(main, ["--config", str(env), "status"])
    assert "! this gateway's name is 'localhost' (a name for loopback)" in status.output
    assert "set HOSTNAME=" in status.output and status.exit_code == 1
    check = CliRunner().invoke(main, ["--config", str(env), "check", str(eml)])
    assert "scanmail: warning: this gateway's name is 'localhost'" in check.output
    assert check.exit_code == 0
    fine = write_env(HOSTNAME="gw.corp.example")
    check = CliRunner().invoke(main, ["--config", str(fine), "check", str(eml)])
    assert "gateway's name" not in check.output
