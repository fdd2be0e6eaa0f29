"""scanmail-smtpd: real SMTP on loopback into a real spool; real processes for the crash tests."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers.receiver import running
from helpers.smtp_sink import free_port, wait_for_port
from scanmail.admin.init import create_spool
from scanmail.cli.smtpd import main as smtpd_main
from scanmail.config import Config, load_config
from scanmail.smtpd import acceptance
from scanmail.spool import list_complete, read_spool_file

Env = dict[str, str]
LOCAL = {"LOCAL_DOMAINS": "corp.example", "RELAY_NETWORKS": "192.0.2.0/24"}
MESSAGE = (
    b"From: Ann <ann@ext.example>\r\n"
    b"To: bob@corp.example\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"first line\r\n"
    b".a line that starts with a dot\r\n"
    b"last line\r\n"
)

DIALOGUE = b"EHLO c\r\nMAIL FROM:<ann@ext.example>\r\nRCPT TO:<bob@corp.example>\r\nDATA\r\n"


@pytest.fixture
def config(write_env) -> Config:
    return load_config(write_env(**LOCAL))


def incoming(config: Config) -> list[Path]:
    return list_complete(config.spool_dir / "incoming")


def leftovers(config: Config) -> list[str]:
    """Anything at all in incoming or tmp."""
    return sorted(os.listdir(config.spool_dir / "incoming") + os.listdir(config.spool_dir / "tmp"))


def body_after_received(data: bytes) -> bytes:
    """The message as spooled, minus our Received: field (its first three lines)."""
    assert data.startswith(b"Received: from ")
    lines = data.split(b"\r\n")
    end = next(i for i, line in enumerate(lines[1:], 1) if not line.startswith(b"\t"))
    return b"\r\n".join(lines[end:])


def command(smtp: smtplib.SMTP, line: bytes) -> tuple[int, bytes]:
    """Send one raw command line (any bytes) and read the reply."""
    smtp.send(line + b"\r\n")
    return smtp.getreply()


def test_accepts_local_mail_and_spools_it_whole(config: Config) -> None:
    with running(config) as port, smtplib.SMTP("127.0.0.1", port, "client.ext.example") as smtp:
        smtp.ehlo()
        smtp.mail("ann@ext.example")
        smtp.rcpt("bob@corp.example")
        code, reply = smtp.data(MESSAGE)
    assert code == 250
    [path] = incoming(config)
    assert reply.decode().endswith(f"queued as {path.name}")
    assert path.stat().st_mode & 0o777 == 0o750
    spooled = read_spool_file(path)
    assert spooled.envelope.sender == "ann@ext.example"
    assert spooled.envelope.recipients == ("bob@corp.example",)
    data = spooled.read_message()
    assert body_after_received(data) == MESSAGE
    head = data.split(b"\r\nFrom: ")[0].decode()
    assert head.startswith("Received: from client.ext.example ([127.0.0.1])\r\n")
    assert f"by gw.corp.example (scanmail) with ESMTP id {path.name}" in head
    assert "for <bob@corp.example>;" in head
    assert leftovers(config) == [path.name]


def test_relay_refused_for_untrusted_client(config: Config) -> None:
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        smtp.mail("ann@ext.example")
        code, text = smtp.rcpt("victim@elsewhere.example")
        assert (code, text[:5]) == (550, b"5.7.1")
        code, _ = smtp.rcpt("victim@corp.example.elsewhere.example")
        assert code == 550
        assert smtp.docmd("DATA")[0] == 503  # no recipient was accepted
    assert leftovers(config) == []


def test_trusted_network_may_relay(write_env) -> None:
    config = load_config(write_env(LOCAL_DOMAINS="corp.example", RELAY_NETWORKS="127.0.0.0/8"))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        assert smtp.sendmail("app@corp.example", ["someone@far.example"], MESSAGE) == {}
    [path] = incoming(config)
    assert read_spool_file(path).envelope.recipients == ("someone@far.example",)


def test_subdomains_and_postmaster(write_env) -> None:
    config = load_config(write_env(LOCAL_DOMAINS=".corp.example", RELAY_NETWORKS=""))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        smtp.mail("")
        assert smtp.rcpt("bob@sales.corp.example")[0] == 250
        assert smtp.rcpt("postmaster")[0] == 250  # RFC 5321 4.5.1
        assert smtp.rcpt("bob@corp.example.evil.example")[0] == 550
        assert smtp.data(MESSAGE)[0] == 250
    [path] = incoming(config)
    envelope = read_spool_file(path).envelope
    assert envelope.sender == ""
    assert envelope.recipients == ("bob@sales.corp.example", "postmaster")
    assert path.read_bytes().startswith(b"FROM <>\n")


def test_message_size_limit(write_env) -> None:
    config = load_config(write_env(MAX_MESSAGE_SIZE="10K", **LOCAL))
    big = MESSAGE + b"x" * 70 + b"\r\n"
    big = big * (12 * 1024 // len(big))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "10240"
        assert smtp.mail("ann@ext.example", ["SIZE=20000"])[0] == 552
        # A client that does not declare the size hears 552 after the data.
        smtp.mail("ann@ext.example")
        smtp.rcpt("bob@corp.example")
        code, text = smtp.data(big)
        assert (code, text[:5]) == (552, b"5.3.4")
        assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE) == {}
    assert len(incoming(config)) == 1


def test_too_many_recipients(write_env) -> None:
    config = load_config(write_env(MAX_RECIPIENTS="2", **LOCAL))
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        smtp.mail("ann@ext.example")
        assert smtp.rcpt("a@corp.example")[0] == 250
        assert smtp.rcpt("b@corp.example")[0] == 250
        assert smtp.rcpt("c@corp.example") == (452, b"4.5.3 Too many recipients")
        assert smtp.data(MESSAGE)[0] == 250
    [path] = incoming(config)
    assert read_spool_file(path).envelope.recipients == ("a@corp.example", "b@corp.example")


def test_line_too_long(config: Config) -> None:
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        smtp.mail("ann@ext.example")
        smtp.rcpt("bob@corp.example")
        code, _ = smtp.data(MESSAGE + b"y" * 5000 + b"\r\n" + MESSAGE)
        assert code == 500
        assert smtp.noop()[0] == 250  # the session goes on
    assert leftovers(config) == []


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"MAIL FROM:<ann\x00x@ext.example>", 553),
        (b"MAIL FROM:<ann\rx@ext.example>", 553),
        (b'MAIL FROM:<"ann>x"@ext.example>', 553),
        (b"MAIL FROM:<\xc3\xa5sa@ext.example>", 553),  # non-ASCII without SMTPUTF8
        (b"MAIL FROM:<\xff@ext.example> SMTPUTF8", 553),  # not UTF-8 at all
        (b"MAIL FROM:<noatsign>", 553),
    ],
)
def test_refuses_addresses_that_break_the_spool(config: Config, line: bytes, code: int) -> None:
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        assert command(smtp, line)[0] == code
        assert smtp.mail("ann@ext.example")[0] == 250
        assert command(smtp, b'RCPT TO:<"bob<x"@corp.example>')[0] == 553
        assert command(smtp, b"RCPT TO:<bob\x00@corp.example>")[0] == 553
        assert command(smtp, b"RCPT TO:<bob\r@corp.example>")[0] == 553
    assert leftovers(config) == []


def test_8bitmime_and_smtputf8_spooled_byte_for_byte(config: Config) -> None:
    message = (
        "From: Søren <søren@ext.example>\r\nTo: jörg@corp.example\r\nSubject: grüße\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Smørrebrød\r\n"
    ).encode() + b"latin-1 bytes: \xe9\xe8\xff\r\nbare LF inside\nand CR\r inside\r\n"
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("8bitmime") and smtp.has_extn("smtputf8")
        errors = smtp.sendmail(
            "søren@ext.example", ["jörg@corp.example"], message,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
        assert errors == {}
    [path] = incoming(config)
    spooled = read_spool_file(path)
    assert spooled.envelope.sender == "søren@ext.example"
    assert spooled.envelope.recipients == ("jörg@corp.example",)
    assert body_after_received(spooled.read_message()) == message
    assert b" with UTF8SMTP id " in spooled.read_message()


def test_connection_limit(write_env) -> None:
    config = load_config(write_env(MAX_CONNECTIONS="2", **LOCAL))
    with running(config) as port:
        first = smtplib.SMTP("127.0.0.1", port)
        second = smtplib.SMTP("127.0.0.1", port)
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", port)
        assert refused.value.smtp_code == 421
        first.quit()
        deadline = time.monotonic() + 5
        while True:  # the slot frees once the server has seen the QUIT through
            try:
                third = smtplib.SMTP("127.0.0.1", port)
                break
            except smtplib.SMTPConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert third.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE) == {}
        third.quit()
        second.quit()
    assert len(incoming(config)) == 1


def test_idle_timeout_drops_the_client(write_env) -> None:
    config = load_config(write_env(SMTP_TIMEOUT="1", **LOCAL))
    with running(config) as port, socket.create_connection(("127.0.0.1", port), 5) as sock:
        assert sock.recv(1024).startswith(b"220 ")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, not by our 5 s timeout
        assert 0.5 < time.monotonic() - started < 4


def test_dropped_connection_mid_data_leaves_nothing(config: Config) -> None:
    with running(config) as port:
        for size in (10_000, 3 << 20):  # in memory, and spilled to tmp/ as it arrived
            with socket.create_connection(("127.0.0.1", port), 5) as sock:
                sock.sendall(DIALOGUE + MESSAGE + b"z" * 60 + b"\r\n" * (size // 62))
                time.sleep(0.2)
        time.sleep(0.2)
    assert leftovers(config) == []


def test_readonly_incoming_answers_451(config: Config) -> None:
    folder = config.spool_dir / "incoming"
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("chattr +i not supported here (root ignores chmod, so nothing else works)")
    try:
        with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.ehlo()
            smtp.mail("ann@ext.example")
            smtp.rcpt("bob@corp.example")
            code, text = smtp.data(MESSAGE)
            assert (code, text[:5]) == (451, b"4.3.0")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert leftovers(config) == []


@pytest.fixture
def tiny_spool(tmp_path: Path, write_env) -> Iterator[Config]:
    """A spool on a 512 KiB tmpfs of its own (needs mount rights; skipped otherwise)."""
    root = tmp_path / "tiny"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(root)],
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here: " + mounted.stderr.decode().strip())
    try:
        create_spool(root)
        yield load_config(write_env(**LOCAL), environ={"SPOOL_DIR": str(root)})
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def test_full_filesystem_answers_451_and_loses_nothing(tiny_spool: Config) -> None:
    config = tiny_spool
    filler = config.spool_dir / "var" / "filler"
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE) == {}
        [accepted] = incoming(config)
        with contextlib.suppress(OSError), open(filler, "wb") as out:
            while True:
                out.write(b"\0" * 4096)
                out.flush()
        assert smtp.mail("ann@ext.example", ["SIZE=2000"]) == (
            452, b"4.3.1 Insufficient system storage"
        )
        smtp.mail("ann@ext.example")  # no SIZE: the failure comes with the write
        smtp.rcpt("bob@corp.example")
        code, text = smtp.data(MESSAGE * 20)
        assert (code, text[:5]) == (451, b"4.3.0")
        assert incoming(config) == [accepted]
        assert leftovers(config) == [accepted.name]
        filler.unlink()
        assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE * 20) == {}
    assert len(incoming(config)) == 2
    assert body_after_received(read_spool_file(accepted).read_message()) == MESSAGE


def test_starttls(write_env, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=gw.corp.example", "-days", "2",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    config = load_config(write_env(TLS_CERT=str(cert), TLS_KEY=str(key), **LOCAL))
    client = ssl.create_default_context(cafile=str(cert))
    client.check_hostname = False
    with running(config) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        smtp.starttls(context=client)
        smtp.ehlo()
        assert not smtp.has_extn("starttls") and not smtp.has_extn("auth")
        assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE) == {}
    [path] = incoming(config)
    assert b" with ESMTPS id " in read_spool_file(path).read_message()


def test_cli_configuration_errors_exit_78(write_env, tmp_path: Path) -> None:
    env = write_env(TLS_CERT=str(tmp_path / "missing.pem"), TLS_KEY=str(tmp_path / "k"), **LOCAL)
    result = CliRunner().invoke(smtpd_main, ["--config", str(env), "--listen", "127.0.0.1:1"])
    assert result.exit_code == 78
    result = CliRunner().invoke(smtpd_main, ["--config", str(env), "--listen", "nonsense"])
    assert result.exit_code == 78


def test_port_in_use_exits_75(config: Config) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = config.spool_dir / "etc" / "scanmail.env"
        listen = f"127.0.0.1:{port}"
        result = CliRunner().invoke(smtpd_main, ["--config", str(env), "--listen", listen])
    assert result.exit_code == 75


def start_daemon(
    env: Path, port: int, *extra: str, environ: Env | None = None
) -> subprocess.Popen[bytes]:
    """The real scanmail-smtpd, as its own process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "scanmail.cli.smtpd", "--config", str(env),
         "--listen", f"127.0.0.1:{port}", *extra],
        stderr=subprocess.PIPE, env={**os.environ, **(environ or {})},
    )
    try:
        wait_for_port(port)
    except OSError:
        process.kill()
        raise AssertionError(process.communicate()[1].decode()) from None
    return process


def stop_daemon(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.communicate()


def test_sigkill_in_the_middle_of_data(write_env) -> None:
    env = write_env(**LOCAL)
    config = load_config(env)
    port = free_port()
    process = start_daemon(env, port)
    try:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE) == {}
        [accepted] = incoming(config)
        with socket.create_connection(("127.0.0.1", port), 5) as sock:
            sock.recv(1024)
            sock.sendall(DIALOGUE + MESSAGE + (b"w" * 70 + b"\r\n") * 40_000)  # 2.8 MB
            time.sleep(0.3)
            process.send_signal(signal.SIGKILL)
            process.wait(10)
    finally:
        stop_daemon(process)
    assert leftovers(config) == [accepted.name]
    assert body_after_received(read_spool_file(accepted).read_message()) == MESSAGE


def wait_for_uid(pid: int, uid: int) -> list[str]:
    """The real, effective, saved and fs uids of a process, once it has become uid (or 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        status = Path(f"/proc/{pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        if uids[0] == str(uid) or time.monotonic() > deadline:
            return uids
        time.sleep(0.02)


def test_sigterm_stops_cleanly_and_user_drop(write_env) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    if os.getuid() != 0:
        pytest.skip("changing user needs root")
    # pytest's tmp_path is private to root: this spool must be reachable by nobody.
    root = Path(tempfile.mkdtemp(prefix="scanmail-user-"))
    try:
        os.chmod(root, 0o711)
        create_spool(root / "spool", user="nobody")
        env = write_env(**LOCAL)
        config = load_config(env, environ={"SPOOL_DIR": str(root / "spool")})
        port = free_port()
        process = start_daemon(
            env, port, "--user", "nobody", environ={"SPOOL_DIR": str(root / "spool")}
        )
        try:
            assert wait_for_uid(process.pid, nobody.pw_uid) == [str(nobody.pw_uid)] * 4
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                assert smtp.sendmail("ann@ext.example", ["bob@corp.example"], MESSAGE) == {}
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
        finally:
            stop_daemon(process)
        [path] = incoming(config)
        assert path.stat().st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize(
    ("address", "utf8", "sender", "ok"),
    [
        ("bob@corp.example", False, False, True),
        ("jörg@corp.example", True, False, True),
        ("jörg@corp.example", False, False, False),
        ("postmaster", False, False, True),
        ("postmaster", False, True, False),
        ("@corp.example", False, False, False),
        ("a" * 250 + "@corp.example", False, False, False),
        ("bob\t@corp.example", False, False, False),
    ],
)
def test_check_address(address: str, utf8: bool, sender: bool, ok: bool) -> None:
    assert (acceptance.check_address(address, utf8, sender) is None) is ok
