"""The receiver on [::]: real SMTP over 127.0.0.1 and ::1 to one socket, IPv4 clients seen
as IPv4; on a host without IPv6 (a seccomp filter, as RestrictAddressFamilies= makes one)
it says so and listens on 0.0.0.0."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import no_ipv6
from helpers.receiver import running
from helpers.smtp_sink import wait_for_port
from scanmail.config import Config, load_config
from scanmail.errors import ConfigError
from scanmail.spool import list_complete, read_spool_file

TESTS = Path(__file__).resolve().parents[1]
MESSAGE = b"From: ann@ext.example\r\nSubject: hi\r\n\r\nhello\r\n"


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


def free_dual_port() -> int:
    """A port free on every IPv4 and IPv6 address now."""
    with socket.socket(socket.AF_INET6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("value", "parsed"), [
    ("[::]:25", ("::", 25)), ("[::1]:10024", ("::1", 10024)), ("0.0.0.0:25", ("0.0.0.0", 25)),
    ("127.0.0.1:2525", ("127.0.0.1", 2525)), ("mx.corp.example:25", ("mx.corp.example", 25)),
    (" [fe80::1%eth0]:25 ", ("fe80::1%eth0", 25)),
])
def test_listen_takes_ipv6_in_brackets(value: str, parsed: tuple[str, int]) -> None:
    assert Config.from_mapping({"LISTEN": value, "HOSTNAME": "gw.x"}).listen == parsed


@pytest.mark.parametrize(("value", "why"), [
    ("::1:25", "an IPv6 address goes in brackets"), ("[::1]25", "must be ADDRESS:PORT"),
    ("[mx.corp.example]:25", "is not an IPv6 address"), ("[::]:99999", "must be ADDRESS:PORT"),
    ("25", "must be ADDRESS:PORT"),
])
def test_listen_refuses_what_cannot_be_read_one_way(value: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        Config.from_mapping({"LISTEN": value, "HOSTNAME": "gw.x"})


def test_the_default_listens_on_every_ipv4_and_ipv6_address() -> None:
    assert Config.from_mapping({"HOSTNAME": "gw.x"}).listen == ("::", 25)


def send(host: str, port: int, rcpt: str) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        try:
            return dict(smtp.sendmail("ann@ext.example", [rcpt], MESSAGE))
        except smtplib.SMTPRecipientsRefused as exc:
            return dict(exc.recipients)


@needs_ipv6
def test_one_socket_takes_ipv4_and_ipv6_clients(write_env) -> None:
    # Only the IPv4 loopback may relay: the IPv4 client must be seen as 127.0.0.1, not
    # as ::ffff:127.0.0.1, and the IPv6 one as ::1.
    config = load_config(write_env(LOCAL_DOMAINS="corp.example", RELAY_NETWORKS="127.0.0.1/32"))
    port = free_dual_port()
    with running(config, port, host="::"):
        assert send("127.0.0.1", port, "bob@corp.example") == {}
        assert send("::1", port, "carol@corp.example") == {}
        assert send("127.0.0.1", port, "dan@elsewhere.example") == {}  # trusted: relayed
        refused = send("::1", port, "eve@elsewhere.example")
    assert refused["eve@elsewhere.example"][0] == 550
    received = {}
    for path in list_complete(config.spool_dir / "incoming"):
        spool_file = read_spool_file(path)
        head = spool_file.read_message().split(b"\r\n\r\n", 1)[0]
        received[spool_file.envelope.recipients[0]] = head
    assert sorted(received) == ["bob@corp.example", "carol@corp.example", "dan@elsewhere.example"]
    assert b" ([127.0.0.1])" in received["bob@corp.example"]
    assert b"ffff" not in received["bob@corp.example"]
    assert b"[IPv6:::1])" in received["carol@corp.example"]


@pytest.mark.skipif(not no_ipv6.is_supported(), reason="seccomp filter for x86_64/aarch64 only")
def test_without_ipv6_it_says_so_and_listens_on_ipv4(write_env) -> None:
    env = write_env(LOCAL_DOMAINS="corp.example")
    port = free_dual_port()
    start = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from helpers import no_ipv6; "
             "no_ipv6.install(); from scanmail.cli.smtpd import main; main()")
    process = subprocess.Popen(
        [sys.executable, "-c", start, str(TESTS), "--config", str(env), "--listen",
         f"[::]:{port}"], stderr=subprocess.PIPE,
    )
    try:
        try:
            wait_for_port(port)
        except OSError:
            process.kill()
            raise AssertionError(process.communicate()[1].decode()) from None
        assert send("127.0.0.1", port, "bob@corp.example") == {}
        with pytest.raises(OSError):  # nothing listens on IPv6
            socket.create_connection(("::1", port), timeout=2).close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    text = err.decode()
    assert (f"no IPv6 on this host (Address family not supported by protocol): listening on "
            f"0.0.0.0:{port}, IPv4 only") in text, text
    assert process.returncode == 0, text
    assert len(list_complete(load_config(env).spool_dir / "incoming")) == 1
