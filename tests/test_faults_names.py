"""Issue 14, item 10: a spool name that arrives again never overwrites an older message.

The real Obtuse smtpd makes names unique only within incoming, so a name already in
outgoing or the quarantine may come in again. Real `scanmail --once` processes, real clamd.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.mail import message
from scanmail.spool import Envelope, Spool, list_complete, read_spool_file
from scanmail.testing import eicar

START = "from scanmail.cli.scan import main; main()"
ENVELOPE = Envelope("alice@outside.example", ("bob@corp.example",))


def scan_once(env: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", START, "--config", str(env), "--once"],
                          capture_output=True, timeout=300, check=False)


def put(root: Path, folder: str, qid: str, data: bytes) -> bytes:
    """A complete spool file of that name in folder, written the way the receiver does."""
    path = root / folder / qid
    path.write_bytes(ENVELOPE.to_bytes() + data)
    path.chmod(0o750)
    return path.read_bytes()


def contents(root: Path, folder: str) -> list[bytes]:
    """The spool files in folder from our sender (not the alerts to the admin)."""
    return sorted(path.read_bytes() for path in list_complete(root / folder)
                  if read_spool_file(path).envelope.sender == ENVELOPE.sender)


def test_a_clean_message_never_overwrites_one_of_its_name_in_outgoing(spool_root, write_env):
    env = write_env(SCANNED_HEADER="")
    older = put(spool_root, "outgoing", "smtpdAAAA", message("older, waiting for the relay"))
    put(spool_root, "incoming", "smtpdAAAA", message("newer, same name"))
    done = scan_once(env)
    assert done.returncode == 0, done.stderr.decode()
    outgoing = list_complete(spool_root / "outgoing")
    assert len(outgoing) == 2, [p.name for p in outgoing]
    assert (spool_root / "outgoing" / "smtpdAAAA").read_bytes() == older
    [newer] = [p for p in outgoing if p.name != "smtpdAAAA"]
    assert b"newer, same name" in newer.read_bytes()
    assert newer.name.startswith("smtpdAAAA-")
    assert list_complete(spool_root / "incoming") == []


def test_an_infected_message_never_overwrites_one_of_its_name_in_quarantine(
    spool_root, write_env,
):
    env = write_env()
    put(spool_root, "incoming", "smtpdBBBB", message("first", attachments=[("a.txt", eicar())]))
    assert scan_once(env).returncode == 0
    first = (spool_root / "quarantine" / "smtpdBBBB").read_bytes()
    put(spool_root, "incoming", "smtpdBBBB", message("second", attachments=[("b.txt", eicar())]))
    done = scan_once(env)
    assert done.returncode == 0, done.stderr.decode()
    held = list_complete(spool_root / "quarantine")
    assert len(held) == 2, [p.name for p in held]
    assert (spool_root / "quarantine" / "smtpdBBBB").read_bytes() == first
    [second] = [p for p in held if p.name != "smtpdBBBB"]
    assert b"second" in second.read_bytes()
    record = (spool_root / "quarantine" / f"{second.name}.d" / "record").read_text()
    assert f"Spool-Id: {second.name}\n" in record and "b.txt" in record
    assert "a.txt" in (spool_root / "quarantine" / "smtpdBBBB.d" / "record").read_text()


def test_a_release_never_overwrites_one_of_its_name_in_outgoing(spool_root, write_env):
    env = write_env()
    put(spool_root, "incoming", "smtpdCCCC", message("held", attachments=[("x.scr", b"MZ")]))
    assert scan_once(env).returncode == 0
    held = (spool_root / "quarantine" / "smtpdCCCC").read_bytes()
    waiting = put(spool_root, "outgoing", "smtpdCCCC", message("another one, same name"))
    done = subprocess.run(
        [sys.executable, "-c", START, "--config", str(env), "quarantine", "release",
         "smtpdCCCC"], capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(contents(spool_root, "outgoing")) == sorted([held, waiting])
    assert list_complete(spool_root / "quarantine") == []


def test_spool_write_and_move_pick_a_fresh_name(spool_root):
    spool = Spool(spool_root)
    first = spool.write("outgoing", ENVELOPE, [b"one\r\n"], qid="smtpdDDDD")
    second = spool.write("outgoing", ENVELOPE, [b"two\r\n"], qid="smtpdDDDD")
    assert first.name == "smtpdDDDD" and second.name.startswith("smtpdDDDD-")
    assert read_spool_file(first).read_message() == b"one\r\n"
    assert read_spool_file(second).read_message() == b"two\r\n"
    put(spool_root, "incoming", "smtpdDDDD", b"three\r\n")
    moved = spool.move(spool_root / "incoming" / "smtpdDDDD", "outgoing")
    assert moved not in (first, second)
    found = sorted(read_spool_file(p).read_message() for p in list_complete(spool.outgoing))
    assert found == [b"one\r\n", b"three\r\n", b"two\r\n"]
    assert list(spool.tmp.iterdir()) == []
