"""scanmail status: not ok while the internal server is down or failed/ holds mail; wording."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from conftest import EnvWriter
from helpers.mail import message
from helpers.smtp_sink import Sink, free_port
from scanmail.admin.status import gather, outage_text
from scanmail.cli import scan
from scanmail.config import load_config
from scanmail.scan import LOCK_NAME, OUTAGE_MARK
from scanmail.spool import Envelope, Spool
from scanmail.testing import PrivateClamd


def test_a_down_relay_and_failed_mail_need_attention(
    spool_root: Path, write_env: EnvWriter
) -> None:
    env = write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(free_port()))
    (spool_root / "var" / LOCK_NAME).write_text("1\n")  # a pass just ran
    Spool(spool_root).write("outgoing", Envelope("a@out.example", ("y@corp.example",)),
                            [message("waiting")])
    Spool(spool_root).write("failed", Envelope("a@out.example", ("x@corp.example",)),
                            [message("bounced")])
    result = CliRunner().invoke(scan.main, ["status", "--config", str(env)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("! internal server does not answer") for line in lines)
    assert any("failed: 1 message could not be delivered" in line for line in lines)
    assert lines[-1].endswith(" need attention"), lines


def test_one_problem_needs_attention_and_an_up_relay_is_fine(
    spool_root: Path, write_env: EnvWriter, clamd_server: PrivateClamd
) -> None:
    with Sink() as sink:
        config = load_config(write_env(RELAY_HOST="127.0.0.1", RELAY_PORT=str(sink.port),
                                       SIG_DB_DIR=str(clamd_server.db_dir)))
        (spool_root / "var" / LOCK_NAME).write_text("1\n")
        lines = gather(config, 900).lines()
        assert lines[-1] == "status: ok", "\n".join(lines)
        Spool(spool_root).write("failed", Envelope("a@out.example", ("x@corp.example",)),
                                [message("bounced")])
        assert gather(config, 900).lines()[-1] == "status: 1 needs attention"


def test_the_outage_is_a_time_and_a_duration(spool_root: Path, write_env: EnvWriter) -> None:
    now = time.time()
    began = now - 180
    config = load_config(write_env())
    (config.var_dir / OUTAGE_MARK).write_text(f"{began:.0f} clamd: connection refused\n")
    (config.var_dir / LOCK_NAME).write_text("1\n")
    text = next(line for line in gather(config, 900, now).lines() if line.startswith("last pass"))
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(began))
    assert f"scanner outage since {stamp} (3 min): clamd: connection refused" in text
    assert f"{began:.0f}" not in text
    assert outage_text("garbage", now) == "scanner outage: garbage"
