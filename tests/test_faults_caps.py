"""Issue 14, item 5: a message too large for one of its lenient readings is unchecked.

Before, an odd body past ALT_MAX (1 MB) or an odd message past CARVE_MAX (16 MB) only got
a defect note, so padding a hiding message with white space got it delivered clean.
Real `scanmail --once` processes with the real clamd.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest

from helpers.mail import RCPT, SENDER, enqueue
from scanmail.mime.walker import ALT_MAX
from scanmail.testing import eicar

START = "from scanmail.cli.scan import main; main()"


def padded(padding: int) -> bytes:
    """An attachment with two transfer encodings (an odd part) padded with blank lines."""
    payload = base64.encodebytes(b"harmless words " * 10 + eicar()).replace(b"\n", b"\r\n")
    return (
        f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: padded\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
        "--b0\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        '--b0\r\nContent-Type: application/octet-stream; name="a.bin"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + payload + b" \r\n" * (padding // 3) + b"--b0--\r\n"


def test_an_odd_body_past_the_lenient_readings_cap_is_unchecked(spool_root, write_env):
    env = write_env()
    path = enqueue(spool_root, padded(ALT_MAX + 100_000))
    done = subprocess.run([sys.executable, "-c", START, "--config", str(env), "--once"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    record = (spool_root / "quarantine" / f"{path.name}.d" / "record").read_text()
    assert "Reason: unchecked" in record and "lenient readings" in record, record


def hidden_behind(boundary_param: str, delimiter: str) -> bytes:
    """A banned attachment in a part only a reading of that boundary finds."""
    return (
        f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: boundary\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: multipart/mixed; boundary={boundary_param}\r\n\r\n"
        f"--{delimiter}\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        f'--{delimiter}\r\nContent-Type: application/octet-stream; name="run.scr"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nTVo=\r\n"
        f"--{delimiter}--\r\n"
    ).encode()


@pytest.mark.parametrize(("param", "delimiter"), [
    ('"a; boundary=b"', "a; boundary=b"),  # a boundary= value that contains boundary=
    ('" "', " "),  # a boundary that is only white space
], ids=["boundary-in-boundary", "blank-boundary"])
def test_the_boundary_readings_that_were_missed(spool_root, write_env, param, delimiter):
    env = write_env()
    path = enqueue(spool_root, hidden_behind(param, delimiter))
    done = subprocess.run([sys.executable, "-c", START, "--config", str(env), "--once"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    record = (spool_root / "quarantine" / f"{path.name}.d" / "record").read_text()
    assert "Reason: banned" in record and "run.scr" in record, record
