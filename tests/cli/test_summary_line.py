"""Hand runs end with one summary line on a terminal; under cron (stdout a pipe) all-well is
silent. The real commands in a child process, stdout on a real pty or on a pipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.mail import enqueue, message
from helpers.sig_fixtures import hash_line
from helpers.smtp_sink import Sink
from helpers.terminal import run
from scanmail.spool import Envelope, Spool
from scanmail.testing import eicar


@pytest.mark.parametrize("terminal", [True, False])
def test_scanmail_once(spool_root: Path, write_env, terminal: bool) -> None:
    for subject in ("one", "two"):
        enqueue(spool_root, message(subject))
    enqueue(spool_root, message("fun", attachments=[("joke.txt", eicar())]))
    ran = run("scanmail", "--config", str(write_env()), "--once", terminal=terminal)
    assert ran.code == 0, ran.stderr
    expected = "scanmail: 3 messages: 2 delivered, 1 quarantined (infected 1)\n"
    assert ran.stdout == (expected if terminal else "")


@pytest.mark.parametrize("terminal", [True, False])
def test_scanmail_fwd_once(spool_root: Path, write_env, terminal: bool) -> None:
    spool = Spool(spool_root)
    for rcpt in ("bob@corp.example", "carol@corp.example"):
        spool.write("outgoing", Envelope("ann@ext.example", (rcpt,)), [message("hi")])
    with Sink() as sink:
        env = write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port))
        ran = run("scanmail-fwd", "--config", str(env), "--once", terminal=terminal)
    assert ran.code == 0, ran.stderr
    assert len(sink.messages) == 2
    expected = "scanmail-fwd: 2 sent, 0 deferred, 0 failed\n"
    assert ran.stdout == (expected if terminal else "")


def test_scanmail_fwd_once_says_what_waits_and_exits_75(spool_root: Path, write_env) -> None:
    Spool(spool_root).write("outgoing", Envelope("ann@ext.example", ("bob@corp.example",)),
                            [message("hi")])
    with Sink() as sink:
        sink.handler.data_replies = ["451 4.3.0 Try again later"]
        env = write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port))
        ran = run("scanmail-fwd", "--config", str(env), "--once", terminal=True)
    assert ran.code == 75
    assert ran.stdout == "scanmail-fwd: 0 sent, 1 deferred, 0 failed\n"


@pytest.mark.parametrize("terminal", [True, False])
def test_sigupdate(tmp_path: Path, write_env, terminal: bool) -> None:
    db = tmp_path / "sigdb"
    db.mkdir()
    (db / "local.hdb").write_text(hash_line(eicar(), "Eicar-Test-Signature"))
    env = write_env(SIG_DB_DIR=str(db), FRESHCLAM_COMMAND="", SCANNER="command")
    ran = run("sigupdate", "--config", str(env), terminal=terminal)
    assert ran.code == 0, ran.stderr
    if terminal:
        assert re.fullmatch(r"sigupdate: signatures current \(local\.hdb, \d s old\)\n",
                            ran.stdout), ran.stdout
    else:
        assert ran.stdout == ""
