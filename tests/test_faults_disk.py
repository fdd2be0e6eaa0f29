"""Issue 14, items 11 and 12: full disks, on a real tmpfs of the test's own (needs root).

11: a full disk while the forwarder records a partial delivery never makes the next try
deliver again to the recipients already served.
12: a full disk in the pass's lock write or work-folder creation is exit 74 with a
one-line error, not 70 with a traceback.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.mail import enqueue, message
from helpers.smtp_sink import Sink
from scanmail.admin.init import create_spool
from scanmail.spool import Envelope, Spool

SCAN = "from scanmail.cli.scan import main; main()"
FWD = "from scanmail.cli.fwd import main; main()"


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                             capture_output=True, check=False)
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): " + mounted.stderr.decode().strip())
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem of folder with one file, then give back `leave` bytes."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    with contextlib.suppress(OSError), open(filler, "ab") as out:  # the last partial page
        while True:
            out.write(b"\0" * 512)
            out.flush()
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def run(start: str, env: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", start, "--config", str(env), *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_full_disk_during_the_sent_write_back_never_redelivers(tmp_path, write_env):
    body = message("big", attachments=[("data.bin", os.urandom(1_500_000))])
    with Sink() as sink, tmpfs(tmp_path / "tiny", "size=6m,mode=0700") as root:
        create_spool(root)
        env = write_env(SPOOL_DIR=str(root), RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port))
        sink.handler.rcpt_replies = {"carol@corp.example": ["452 4.2.2 Mailbox full"]}
        Spool(root).write("outgoing", Envelope("ann@ext.example",
                                               ("bob@corp.example", "carol@corp.example")), [body])
        filler = fill(root / "var", leave=400_000)  # room for small files, not for a rewrite
        first = run(FWD, env, "--once")
        assert first.returncode in (0, 74, 75), first.stderr
        filler.unlink()
        second = run(FWD, env, "--once", "--flush")
        assert second.returncode == 0, second.stderr
        delivered = sorted(r for m in sink.handler.messages for r in m.recipients)
    assert delivered == ["bob@corp.example", "carol@corp.example"]  # each exactly once


def test_full_disk_in_the_lock_write_is_exit_74(tmp_path, write_env):
    with tmpfs(tmp_path / "tiny", "size=2m,mode=0700") as root:
        create_spool(root)
        env = write_env(SPOOL_DIR=str(root))
        fill(root / "var")  # no lock file yet: its first write finds no room
        done = run(SCAN, env, "--once")
        assert done.returncode == 74, done.stderr
        assert "Traceback" not in done.stderr and "lock file" in done.stderr


def test_no_inode_left_for_the_work_folder_is_exit_74(tmp_path, write_env):
    with tmpfs(tmp_path / "tiny", "size=8m,nr_inodes=400,mode=0700") as root:
        create_spool(root)
        env = write_env(SPOOL_DIR=str(root))
        assert run(SCAN, env, "--once").returncode == 0  # lock file and event database made
        path = enqueue(root, message("waits"))
        filler = root / "var" / "inodes"
        filler.mkdir()
        made = 0
        with contextlib.suppress(OSError):
            for made in range(1000):
                (filler / str(made)).touch()
        for i in range(made - 2, made):  # two inodes: the event database's -wal and -shm
            (filler / str(i)).unlink()
        done = run(SCAN, env, "--once")
        assert done.returncode == 74, done.stderr
        assert "Traceback" not in done.stderr
        assert path.is_file()  # still in incoming, whole
