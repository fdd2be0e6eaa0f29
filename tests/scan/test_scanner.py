"""scan/scanner: the clamd backend against the private clamd, the command backend for real."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scanmail.clamd_client import FILDES_MAX
from scanmail.config import Config, load_config
from scanmail.errors import ScanFailed, ScannerUnavailable
from scanmail.scan.scanner import (
    ClamdScanner,
    CommandScanner,
    ScanResult,
    Target,
    TooLarge,
    make_scanner,
)
from scanmail.testing import PrivateClamd, eicar

EICAR = "Eicar-Test-Signature"


def spool_file(path: Path, message: bytes, header: bytes = b"FROM <a@x>\nRCPT <b@x>\nBODY\n"
               ) -> Target:
    """A spool-file-like target: an envelope header, then the message from an offset."""
    path.write_bytes(header + message)
    return Target(path, offset=len(header))


def part(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def clamd_config(write_env) -> Config:
    return load_config(write_env())


def test_clamd_version_is_clamavs_line(clamd_config: Config) -> None:
    scanner = make_scanner(clamd_config)
    assert isinstance(scanner, ClamdScanner)
    assert scanner.version().startswith("ClamAV ")


def test_clamd_finds_eicar_in_a_part_and_not_in_clean_bytes(
    clamd_config: Config, tmp_path: Path
) -> None:
    scanner = ClamdScanner(clamd_config)
    message = spool_file(tmp_path / "q1", b"Subject: hi\r\n\r\nclean\r\n")
    clean = part(tmp_path / "1-clean.txt", b"nothing here\n")
    infected = part(tmp_path / "2-eicar.com", eicar())
    again = part(tmp_path / "3-eicar-again.com", eicar())  # found twice, named once
    assert scanner.scan(message, [clean], tmp_path) == ScanResult()
    result = scanner.scan(message, [clean, infected, again], tmp_path)
    assert result.infected
    assert len(result.viruses) == 1 and result.viruses[0].startswith(EICAR)


def test_clamd_scans_the_message_from_its_offset(clamd_config: Config, tmp_path: Path) -> None:
    scanner = ClamdScanner(clamd_config)
    # The test database holds EICAR's hash, so only the exact bytes match: found from the
    # offset means the envelope header was skipped, and from 0 it is not the same object.
    target = spool_file(tmp_path / "q2", eicar())
    found = scanner.scan_target(target)
    assert found is not None and found.startswith(EICAR)
    assert scanner.scan_target(Target(tmp_path / "q2", offset=0)) is None


def test_clamd_down_is_scanner_unavailable(
    write_env, private_clamd: PrivateClamd, tmp_path: Path
) -> None:
    scanner = ClamdScanner(load_config(write_env(CLAMD_SOCKET=str(private_clamd.socket))))
    assert scanner.version().startswith("ClamAV ")
    private_clamd.stop()
    with pytest.raises(ScannerUnavailable, match=rf"clamd at {private_clamd.socket}"):
        scanner.version()
    with pytest.raises(ScannerUnavailable):
        scanner.scan(spool_file(tmp_path / "q3", b"x"), [], tmp_path)


def test_a_target_that_cannot_be_read_is_scan_failed(clamd_config: Config, tmp_path: Path) -> None:
    with pytest.raises(ScanFailed, match="gone"):
        ClamdScanner(clamd_config).scan_target(Target(tmp_path / "gone"))


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "scanner.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def command_config(write_env, command: str, **settings: str) -> Config:
    return load_config(write_env(SCANNER="command", SCANNER_COMMAND=command, **settings))


# A scanner judged by its exit code: 3 means infected, names on "path: NAME FOUND" lines.
JUDGE = """\
found=0
for f in "$1"/*; do
  if grep -q EVIL "$f"; then echo "$f: Evil.Test FOUND"; found=1; fi
done
[ "$found" = 1 ] && exit 3
exit 0
"""


def test_a_command_scanner_is_judged_by_its_exit_code(write_env, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    config = command_config(write_env, f"{script(tmp_path, JUDGE)} {{}}",
                            SCANNER_INFECTED_CODES="3")
    scanner = make_scanner(config)
    assert isinstance(scanner, CommandScanner)
    assert scanner.command_for(work) == [str(tmp_path / "scanner.sh"), str(work)]
    clean = spool_file(tmp_path / "q1", b"Subject: hi\r\n\r\nfine\r\n")
    assert scanner.scan(clean, [], work) == ScanResult()
    # the raw message is copied into the work folder for the one run, then removed
    assert list(work.iterdir()) == []
    infected = spool_file(tmp_path / "q2", b"Subject: hi\r\n\r\nEVIL\r\n")
    part(work / "1-a.txt", b"EVIL too")
    assert scanner.scan(infected, [work / "1-a.txt"], work) == ScanResult(("Evil.Test",))
    assert sorted(p.name for p in work.iterdir()) == ["1-a.txt"]


def test_an_infected_code_without_a_name_is_unknown_virus(write_env, tmp_path: Path) -> None:
    config = command_config(write_env, str(script(tmp_path, "exit 1\n")))
    scanner = CommandScanner(config)
    assert scanner.command_for(tmp_path) == [str(tmp_path / "scanner.sh"), str(tmp_path)]
    work = tmp_path / "work"
    work.mkdir()
    assert scanner.scan(spool_file(tmp_path / "q", b"x"), [], work) == ScanResult(
        ("unknown virus",))


def test_another_exit_code_is_unavailable_with_the_last_line(write_env, tmp_path: Path) -> None:
    config = command_config(write_env, str(script(tmp_path, "echo starting\necho 'no db' >&2\n"
                                                            "exit 2\n")))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ScannerUnavailable, match=r"^scanner command exited 2: no db$"):
        CommandScanner(config).scan(spool_file(tmp_path / "q", b"x"), [], work)
    assert list(work.iterdir()) == []


def test_a_missing_or_hanging_command_is_unavailable(write_env, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    missing = CommandScanner(command_config(write_env, "/nonexistent/scanner {}"))
    with pytest.raises(ScannerUnavailable, match="not found"):
        missing.version()
    with pytest.raises(ScannerUnavailable, match="not found"):
        missing.scan(spool_file(tmp_path / "q", b"x"), [], work)
    slow = CommandScanner(command_config(write_env, str(script(tmp_path, "sleep 5\n")),
                                         SCANNER_TIMEOUT="1"))
    with pytest.raises(ScannerUnavailable, match=r"timed out after 1\.0 s"):
        slow.scan(spool_file(tmp_path / "q", b"x"), [], work)
    assert list(work.iterdir()) == []


@pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan missing")
def test_clamscan_as_the_command_backend(write_env, clamd_db: Path, tmp_path: Path) -> None:
    config = command_config(
        write_env, f"clamscan --no-summary --infected --database={clamd_db} {{}}")
    scanner = CommandScanner(config)
    assert scanner.version() == shutil.which("clamscan")
    work = tmp_path / "work"
    work.mkdir()
    assert scanner.scan(spool_file(tmp_path / "q1", b"Subject: x\r\n\r\nfine\r\n"), [],
                        work) == ScanResult()
    result = scanner.scan(spool_file(tmp_path / "q2", b"clean"), [part(work / "1-e", eicar())],
                          work)
    assert len(result.viruses) == 1 and result.viruses[0].startswith(EICAR)


def test_a_local_clamd_is_handed_descriptors_and_large_objects_are_streamed(
    clamd_config: Config, tmp_path: Path
) -> None:
    """FILDES for small objects (clamd reads them in place; from an offset through a memfd),
    INSTREAM past the handover limit; the verdict is the same either way."""
    scanner = ClamdScanner(clamd_config)
    sample = part(tmp_path / "eicar.com", eicar())
    handed = scanner.client.scan_file(sample)
    assert handed.text.startswith("fd[") and handed.virus and handed.virus.startswith(EICAR)
    enveloped = spool_file(tmp_path / "q4", eicar())
    reply = scanner.client.scan_file(enveloped.path, enveloped.offset)
    assert reply.text.startswith("fd[") and reply.virus and reply.virus.startswith(EICAR)
    scanner.client.fildes_max = len(eicar()) - 1
    streamed = scanner.client.scan_file(enveloped.path, enveloped.offset)
    assert streamed.text.startswith("stream:") and streamed.virus == reply.virus


def test_handover_stays_below_clamds_stream_limit(
    write_env, clamd_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What INSTREAM would refuse (so the message is unchecked) is never handed over to be
    skipped in silence: up to CLAMD_CONF's StreamMaxLength/MaxFileSize when it is our clamd's
    file, else up to FILDES_MAX, under any clamd's default MaxFileSize."""
    server = PrivateClamd(tmp_path_factory.mktemp("clamd-1m"), db_dir=clamd_db)
    server.configure()
    server.conf.write_text(server.conf.read_text().replace("StreamMaxLength 300M",
                                                           "StreamMaxLength 1M"))
    work = tmp_path_factory.mktemp("objects")
    two_mb = part(work / "two.bin", b"\0" * (2 << 20))
    over = part(work / "over.bin", b"\0" * (FILDES_MAX + 1))
    with server:
        told = ClamdScanner(load_config(write_env(CLAMD_SOCKET=str(server.socket),
                                                  CLAMD_CONF=str(server.conf))))
        assert told.client.fildes_max == 1 << 20
        with pytest.raises(TooLarge):
            told.scan_target(Target(two_mb))
        unknown = ClamdScanner(load_config(write_env(CLAMD_SOCKET=str(server.socket),
                                                     CLAMD_CONF="")))
        assert unknown.client.fildes_max == FILDES_MAX
        assert unknown.scan_target(Target(two_mb)) is None  # handed over, scanned whole
        with pytest.raises(TooLarge):
            unknown.scan_target(Target(over))
