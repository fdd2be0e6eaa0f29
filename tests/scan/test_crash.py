"""SIGKILL at random moments: every message ends in exactly one folder, byte for byte."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers.mail import enqueue, message
from scanmail.spool import read_spool_file
from scanmail.testing import eicar

KILLS = 12
MESSAGES = 500
START = "from scanmail.cli.scan import main; main()"


def build_spool(root: Path) -> dict[str, tuple[bytes, str]]:
    """A few hundred messages; qid -> (spool file bytes, the folder each must end in)."""
    rng = random.Random(1)
    arrived = {}
    for i in range(MESSAGES):
        kind = rng.choice(["clean"] * 6 + ["attachment", "infected", "banned"])
        if kind == "infected":
            data = message(f"m{i}", attachments=[("note.txt", eicar())])
        elif kind == "banned":
            data = message(f"m{i}", attachments=[("run.scr", b"MZ")])
        elif kind == "attachment":
            data = message(f"m{i}", attachments=[("data.bin", rng.randbytes(200_000))])
        else:
            data = message(f"m{i}", body=f"message {i}\n" * 20)
        path = enqueue(root, data)
        arrived[path.name] = (path.read_bytes(), "outgoing" if kind in ("clean", "attachment")
                              else "quarantine")
    return arrived


def scanmail(env: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", START, "--config", str(env), "--once"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(spool_root, write_env):
    env = write_env(SCAN_WORKERS="1")
    arrived = build_spool(spool_root)
    rng = random.Random(2)
    killed_mid_pass = 0
    for _ in range(KILLS * 4):  # bounded: stops when the spool is done or enough kills landed
        before = len(os.listdir(spool_root / "incoming"))
        if before == 0 or killed_mid_pass >= KILLS:
            break
        process = scanmail(env)
        # Kill once the pass is under way (however slow the machine), at a random moment.
        deadline = time.monotonic() + 60
        while (len(os.listdir(spool_root / "incoming")) == before and process.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.15))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stderr.close()  # type: ignore[union-attr]
        killed_mid_pass += before > len(os.listdir(spool_root / "incoming")) > 0
    assert killed_mid_pass >= KILLS // 2  # kills that landed in the middle of a pass
    final = scanmail(env)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()

    for qid, (original, folder) in arrived.items():
        where = [f for f in ("incoming", "outgoing", "quarantine", "failed")
                 if (spool_root / f / qid).exists()]
        assert where == [folder], qid
        now = (spool_root / folder / qid).read_bytes()
        if folder == "quarantine":
            assert now == original
            assert (spool_root / "quarantine" / f"{qid}.d" / "record").is_file()
        else:
            sent = read_spool_file(spool_root / folder / qid)
            first = read_spool_file_bytes(original)
            assert sent.envelope == first[0]
            assert sent.read_message() == b"X-Virus-Scanned: ClamAV using scanmail\r\n" + first[1]
            assert os.stat(spool_root / folder / qid).st_mode & 0o777 == 0o750
    # A notification killed mid-write may stay in tmp/ until a pass a day later removes it
    # (never a message): incomplete (0600), or, killed between its chmod and its rename,
    # marked complete (0750); tmp/ is never delivered from either way.
    leftovers = list((spool_root / "tmp").iterdir())
    assert not {p.name for p in leftovers} & set(arrived)
    assert all(p.is_file() and p.stat().st_mode & 0o777 in (0o600, 0o750) for p in leftovers)
    extras = {p.name[:-2] for p in (spool_root / "quarantine").glob("*.d")}
    assert extras == {q for q, (_, f) in arrived.items() if f == "quarantine"}


def read_spool_file_bytes(data: bytes) -> tuple[object, bytes]:
    """Envelope and message of spool-file bytes, through the real parser."""
    import io

    from scanmail.spool import parse_envelope

    handle = io.BytesIO(data)
    envelope, offset = parse_envelope(handle)
    return envelope, data[offset:]
