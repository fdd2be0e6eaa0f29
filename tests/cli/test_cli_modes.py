"""scanmail as cron and systemd run it: quiet --once, the --watch loop, a progress bar on a tty."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time

from helpers.mail import enqueue, folder_of, message

START = "from scanmail.cli.scan import main; main()"


def test_once_under_cron_prints_nothing(spool_root, write_env):
    enqueue(spool_root, message("quiet"))
    done = subprocess.run([sys.executable, "-c", START, "--config", str(write_env()), "--once"],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0
    assert done.stdout == b""
    if os.path.exists("/dev/log"):
        assert done.stderr == b""
    else:  # no syslog: the log lines go to stderr rather than nowhere, and nothing else
        assert all(line.startswith(b"scanmail: qid=") for line in done.stderr.splitlines())


def test_watch_loop_routes_new_mail_and_stops_on_sigterm(spool_root, write_env):
    process = subprocess.Popen(
        [sys.executable, "-c", START, "--config", str(write_env()), "--watch",
         "--interval", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        paths = [enqueue(spool_root, message(f"w{i}")) for i in range(3)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                folder_of(spool_root, p.name) == ["outgoing"] for p in paths):
            time.sleep(0.05)
        assert all(folder_of(spool_root, p.name) == ["outgoing"] for p in paths)
        late = enqueue(spool_root, message("late"))
        while time.monotonic() < deadline and folder_of(spool_root, late.name) != ["outgoing"]:
            time.sleep(0.05)
        assert folder_of(spool_root, late.name) == ["outgoing"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()


def test_progress_bar_on_a_terminal_for_a_backlog(spool_root, write_env):
    for i in range(30):
        enqueue(spool_root, message(f"p{i}"))
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", START, "--config", str(write_env()), "--once"],
            stdout=follower, stderr=follower,
        )
        os.close(follower)
        output = b""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=60) == 0
    finally:
        os.close(leader)
    text = output.decode(errors="replace")
    assert "scanning" in text and "100%" in text
    assert "scanmail: 30 messages: 30 delivered" in text  # the summary line, on stdout
