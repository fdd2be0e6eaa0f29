"""spool: the envelope format, atomic writes and moves, the completion mode, the run lock."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from scanmail.errors import MalformedSpoolFile, SpoolError
from scanmail.spool import (
    COMPLETE_MODE,
    INCOMPLETE_MODE,
    MAX_ENVELOPE_BYTES,
    Envelope,
    Spool,
    is_complete,
    iter_message,
    list_complete,
    mark_complete,
    parse_envelope,
    read_spool_file,
    run_lock,
)

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_then_read_gives_back_envelope_and_message(spool_root: Path) -> None:
    spool = Spool(spool_root)
    envelope = Envelope("ann@ext.example", ("bob@corp.example", "cy@corp.example"),
                        sent=("dee@corp.example",))
    path = spool.write("incoming", envelope, [MESSAGE[:5], MESSAGE[5:]])
    assert path.parent == spool.incoming
    assert mode(path) == COMPLETE_MODE
    read = read_spool_file(path)
    assert read.envelope == envelope
    assert read.read_message() == MESSAGE
    assert read.message_size == len(MESSAGE)
    assert read.qid == path.name
    assert b"".join(iter_message(read, chunk_size=4)) == MESSAGE
    assert list(spool.tmp.iterdir()) == []  # built in tmp/, renamed away


def test_the_header_is_the_documented_text(spool_root: Path) -> None:
    envelope = Envelope("", ("bob@corp.example",), sent=("cy@corp.example",))
    assert envelope.to_bytes() == (
        b"FROM <>\nRCPT <bob@corp.example>\nSENT <cy@corp.example>\nBODY\n"
    )
    path = Spool(spool_root).write("outgoing", envelope, [MESSAGE], qid="given-name")
    assert path.name == "given-name"
    assert path.read_bytes() == envelope.to_bytes() + MESSAGE


@pytest.mark.parametrize("address", ["a<b@x", "a>b@x", "a\r\n@x", "a\x00@x"])
def test_an_address_that_cannot_be_stored_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="cannot be stored"):
        Envelope(address, ("bob@corp.example",)).to_bytes()


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"FROM <a@x>\nRCPT <b@x>\n", "no BODY line"),
        (b"RCPT <b@x>\nBODY\n", "no FROM line"),
        (b"FROM <a@x>\nBODY\n", "no RCPT line"),
        (b"FROM <a@x>\nFROM <c@x>\nRCPT <b@x>\nBODY\n", "two FROM lines"),
        (b"FROM <a@x>\nBCC <b@x>\nBODY\n", "bad envelope line 'BCC <b@x>'"),
        (b"FROM a@x\nRCPT <b@x>\nBODY\n", "bad envelope line 'FROM a@x'"),
    ],
)
def test_a_broken_envelope_says_what_is_wrong(header: bytes, problem: str) -> None:
    with pytest.raises(MalformedSpoolFile) as caught:
        parse_envelope(io.BytesIO(header + (MESSAGE if header.endswith(b"BODY\n") else b"")))
    assert str(caught.value) == problem


def test_an_endless_envelope_is_refused() -> None:
    header = b"FROM <a@x>\n" + b"RCPT <b@x>\n" * (MAX_ENVELOPE_BYTES // 10)
    with pytest.raises(MalformedSpoolFile, match="envelope too long"):
        parse_envelope(io.BytesIO(header + b"BODY\n"))


def test_crlf_envelopes_are_read_too() -> None:
    envelope, offset = parse_envelope(io.BytesIO(b"FROM <a@x>\r\nRCPT <b@x>\r\nBODY\r\nmsg"))
    assert envelope == Envelope("a@x", ("b@x",))
    assert offset == len(b"FROM <a@x>\r\nRCPT <b@x>\r\nBODY\r\n")


def test_an_incomplete_file_is_not_listed_until_marked(spool_root: Path) -> None:
    spool = Spool(spool_root)
    path = spool.write("incoming", Envelope("a@x", ("b@x",)), [MESSAGE], complete=False)
    assert mode(path) == INCOMPLETE_MODE
    assert list_complete(spool.incoming) == []
    mark_complete(path)
    assert mode(path) == COMPLETE_MODE
    assert list_complete(spool.incoming) == [path]


def test_list_complete_is_oldest_first_and_skips_strangers(spool_root: Path) -> None:
    spool = Spool(spool_root)
    envelope = Envelope("a@x", ("b@x",))
    newer = spool.write("incoming", envelope, [MESSAGE], qid="b-newer")
    older = spool.write("incoming", envelope, [MESSAGE], qid="z-older")
    os.utime(older, (1_000_000, 1_000_000))
    for name in (".hidden", "bad name"):
        (spool.incoming / name).write_bytes(b"x")
        (spool.incoming / name).chmod(COMPLETE_MODE)
    (spool.incoming / "a-folder").mkdir()
    assert list_complete(spool.incoming) == [older, newer]
    assert list_complete(spool_root / "no-such-folder") == []
    assert not is_complete((spool.incoming / "a-folder").stat().st_mode)


def test_move_renames_within_the_spool(spool_root: Path) -> None:
    spool = Spool(spool_root)
    path = spool.write("incoming", Envelope("a@x", ("b@x",)), [MESSAGE])
    moved = spool.move(path, "quarantine")
    assert moved == spool.quarantine / path.name
    assert not path.exists()
    assert read_spool_file(moved).read_message() == MESSAGE
    with pytest.raises(SpoolError, match="cannot move to outgoing"):
        spool.move(path, "outgoing")  # already gone: a clear error, nothing touched
    assert moved.exists()


def test_a_write_that_fails_leaves_nothing_half_written(spool_root: Path) -> None:
    spool = Spool(spool_root)

    def chunks():  # the message source breaks half way through
        yield MESSAGE
        raise OSError(5, "Input/output error")

    with pytest.raises(SpoolError, match="cannot write spool file"):
        spool.write("incoming", Envelope("a@x", ("b@x",)), chunks(), qid="broken")
    assert not (spool.incoming / "broken").exists()
    assert not (spool.tmp / "broken").exists()


def test_new_qids_are_fresh_spool_names(spool_root: Path) -> None:
    spool = Spool(spool_root)
    names = {spool.new_qid() for _ in range(50)}
    assert len(names) == 50
    assert all(name.startswith("smtpd") for name in names)


def test_check_names_the_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match=r"incoming: spool folder missing \(run 'scanmail init'\)"):
        Spool(tmp_path).check()


def test_the_run_lock_admits_one_holder(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    with run_lock(lock) as first:
        assert first is True
        assert lock.read_text() == f"{os.getpid()}\n"
        with run_lock(lock) as second:  # another open file: flock refuses it
            assert second is False
    with run_lock(lock) as again:
        assert again is True


def test_an_unopenable_lock_is_a_spool_error(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match="cannot open lock file"), \
            run_lock(tmp_path / "missing" / "run.lock"):
        pass
