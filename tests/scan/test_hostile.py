"""Hostile mail that once slipped through or stopped a pass (from an independent review)."""

from __future__ import annotations

import binascii
import io
import os
import zipfile

from helpers.cli import run_scanmail
from helpers.events import rows as events
from helpers.mail import RCPT, SENDER, enqueue, folder_of
from scanmail.config import load_config
from scanmail.scan.runner import run
from scanmail.testing import PrivateClamd, eicar

HEAD = f"Received: from x\r\nFrom: {SENDER}\r\nTo: {RCPT}\r\nSubject: s\r\nMIME-Version: 1.0\r\n"


def reasons(root) -> dict[str, str]:
    return {row["qid"]: row["reason"] for row in events(root) if row["kind"] == "scan"}


def test_virus_in_an_unnamed_text_body_is_found(spool_root, write_env):
    single = enqueue(spool_root, (HEAD + "Content-Type: text/plain\r\n\r\n").encode()
                     + eicar() + b"\r\n")
    quoted = enqueue(spool_root, (HEAD + "Content-Type: text/plain\r\n"
                     "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode()
                     + eicar().replace(b"=", b"=3D") + b"\r\n")
    run_scanmail(write_env(), "--once")
    assert reasons(spool_root) == {single.name: "infected", quoted.name: "infected"}


def test_a_very_long_name_keeps_its_extension(spool_root, write_env):
    pieces = "".join(f' filename*{i}="{"_" * 70}";\r\n' for i in range(16))
    data = (HEAD + "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            f"Content-Disposition: attachment;\r\n{pieces} filename*16=\"invoice.exe\"\r\n"
            "\r\nMZ\r\n--b--\r\n").encode()
    path = enqueue(spool_root, data)
    run_scanmail(write_env(), "--once")
    assert reasons(spool_root) == {path.name: "banned"}


def test_a_header_block_over_a_megabyte_is_unchecked(spool_root, write_env):
    junk = "".join(f"X-Junk-{i}: {'x' * 60}\r\n" for i in range(17000))
    data = (HEAD + junk + 'Content-Type: application/octet-stream; name="evil.exe"\r\n'
            "\r\nMZ\r\n").encode()
    path = enqueue(spool_root, data)
    run_scanmail(write_env(), "--once")
    assert reasons(spool_root) == {path.name: "unchecked"}


def test_uuencoded_part_and_zip_behind_a_prefix_are_opened(spool_root, write_env):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("invoice.exe", b"MZ" + os.urandom(2000))
    encoded = b"".join(binascii.b2a_uu(archive.getvalue()[i:i + 45])
                       for i in range(0, len(archive.getvalue()), 45))
    uu = enqueue(spool_root, (HEAD + 'Content-Type: application/zip; name="data.zip"\r\n'
                 "Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 data.zip\r\n").encode()
                 + encoded.replace(b"\n", b"\r\n") + b"`\r\nend\r\n")
    prefixed = enqueue(spool_root, (HEAD + 'Content-Type: application/pdf; name="a.pdf"\r\n'
                       "Content-Transfer-Encoding: base64\r\n\r\n").encode()
                       + base64_lines(b"%PDF-1.4\n" + archive.getvalue()))
    run_scanmail(write_env(), "--once")
    assert reasons(spool_root) == {uu.name: "banned", prefixed.name: "banned"}


def base64_lines(data: bytes) -> bytes:
    import base64

    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def test_raw_8bit_name_is_quarantined_and_the_pass_goes_on(spool_root, write_env):
    bad = enqueue(spool_root, HEAD.encode() + b'Content-Type: application/octet-stream; '
                  b'name="r\xe9sum\xe9.exe"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVo=\r\n')
    good = [enqueue(spool_root, (HEAD + f"\r\nhello {i}\r\n").encode()) for i in range(5)]
    code, _ = run_scanmail(write_env(), "--once")
    assert code == 0
    assert folder_of(spool_root, bad.name) == ["quarantine"]
    assert all(folder_of(spool_root, p.name) == ["outgoing"] for p in good)


def test_command_scanner_with_a_part_named_like_its_raw_copy(spool_root, write_env, clamd_db):
    env = write_env(SCANNER="command",
                    SCANNER_COMMAND=f"clamscan --no-summary --infected --database={clamd_db} {{}}")
    path = enqueue(spool_root, (HEAD + "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                   'Content-Type: message/rfc822; name="message.eml"\r\n'
                   "Content-Transfer-Encoding: base64\r\n\r\n").encode()
                   + base64_lines(b"Subject: inner\r\n\r\nhi\r\n") + b"--b--\r\n")
    code, _ = run_scanmail(env, "--once")
    assert code == 0 and folder_of(spool_root, path.name) == ["outgoing"]


def test_a_stream_over_clamds_limit_is_unchecked_and_the_pass_goes_on(
    spool_root, write_env, tmp_path_factory, clamd_db
):
    server = PrivateClamd(tmp_path_factory.mktemp("clamd-small"), db_dir=clamd_db)
    server.configure()
    server.conf.write_text(server.conf.read_text().replace("StreamMaxLength 300M",
                                                           "StreamMaxLength 1M"))
    big = enqueue(spool_root, (HEAD + 'Content-Type: application/octet-stream; name="a.bin"\r\n'
                  "Content-Transfer-Encoding: base64\r\n\r\n").encode()
                  + base64_lines(os.urandom(3 << 20)))
    small = [enqueue(spool_root, (HEAD + f"\r\nhello {i}\r\n").encode()) for i in range(10)]
    with server:  # CLAMD_CONF tells the limit: the 4 MB message is streamed, not handed over
        summary = run(load_config(write_env(CLAMD_SOCKET=str(server.socket),
                                            CLAMD_CONF=str(server.conf))))
    assert summary.left == 0
    assert folder_of(spool_root, big.name) == ["quarantine"]
    assert reasons(spool_root)[big.name] == "unchecked"
    assert all(folder_of(spool_root, p.name) == ["outgoing"] for p in small)
