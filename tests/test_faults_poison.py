"""Issue 14, item 7: a poison message can neither exhaust memory nor stop all scanning.

Real `scanmail --once` children: one under a `prlimit` address-space limit meets a message
with thousands of name= parameters; others are SIGKILLed (as the OOM killer would) while
deciding one message, until that message is held aside as unchecked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.mail import RCPT, SENDER, enqueue, message

START = "from scanmail.cli.scan import main; main()"


def name_bomb(parts: int = 300, names: int = 200) -> bytes:
    """Parts whose headers each carry hundreds of name= parameters."""
    body = []
    for p in range(parts):
        params = "".join(f';\r\n name="p{p:03d}n{i:04d}.txt"' for i in range(names))
        body.append(f"--b0\r\nContent-Type: application/octet-stream{params}\r\n"
                    "Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n")
    return (f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: names\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
            + "".join(body) + "--b0--\r\n").encode()


def test_a_name_bomb_is_unchecked_within_a_memory_limit(spool_root, write_env):
    if subprocess.run(["prlimit", "--version"], capture_output=True).returncode:
        pytest.skip("prlimit (util-linux) not installed")
    env = write_env(SCAN_WORKERS="1")
    path = enqueue(spool_root, name_bomb())
    done = subprocess.run(
        ["prlimit", f"--as={1536 << 20}", "--", sys.executable, "-c", START,
         "--config", str(env), "--once"],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    record = (spool_root / "quarantine" / f"{path.name}.d" / "record").read_text()
    assert "Reason: unchecked" in record and "name parameters" in record
    assert len(record) < 100_000


def test_a_message_that_kills_its_pass_twice_is_held_aside(spool_root, write_env):
    env = write_env(SCAN_WORKERS="2")
    big = message("slow to decide", attachments=[("big.bin", os.urandom(24 << 20))])
    poison = enqueue(spool_root, big)
    innocent = enqueue(spool_root, message("innocent"))
    mark = spool_root / "var" / "inflight" / poison.name
    for tries in (b"1\n", b"2\n"):  # the OOM killer, twice, while the pass decides it
        child = subprocess.Popen([sys.executable, "-c", START, "--config", str(env), "--once"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not (mark.exists() and mark.read_bytes() == tries):
                assert time.monotonic() < deadline and child.poll() is None, "never marked"
                time.sleep(0.001)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        assert poison.is_file()
    done = subprocess.run([sys.executable, "-c", START, "--config", str(env), "--once"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    record = (spool_root / "quarantine" / f"{poison.name}.d" / "record").read_text()
    assert "Reason: unchecked" in record and "died 2 times" in record
    assert (spool_root / "outgoing" / innocent.name).is_file()
    assert not (spool_root / "var" / "inflight").exists() or not os.listdir(mark.parent)
