"""mime/archives: zip and TNEF members, the lazy members() generator, ArchiveError."""

from __future__ import annotations

import inspect
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from scanmail.mime.archives import ArchiveError, Member, members
from scanmail.mime.archives.tnef import MAX_TNEF
from scanmail.testing import TESTFILES, eicar

needs_testfiles = pytest.mark.skipif(not TESTFILES.is_dir(), reason=f"{TESTFILES} missing")


def listed(path: Path) -> list[Member]:
    return list(members(path, path.stat().st_size, path.read_bytes()[:64]))


def read_while_listing(path: Path) -> tuple[list[Member], dict[str, bytes]]:
    """The members, and the bytes of each readable one, read as the walker reads them."""
    found, read = [], {}
    for member in members(path, path.stat().st_size, path.read_bytes()[:64]):
        found.append(member)
        if member.chunks is not None:
            read[member.names[0]] = b"".join(member.chunks())
    return found, read


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_members_are_named_and_every_file_is_readable(tmp_path: Path) -> None:
    inner = zip_bytes({"eicar.com": eicar()})
    path = tmp_path / "outer.zip"
    path.write_bytes(zip_bytes({"readme.txt": b"hello", "inner.zip": inner,
                                "no-name-hint": inner, "docs/": b""}))
    found, read = read_while_listing(path)
    assert [(m.names, m.origin, m.size) for m in found] == [
        (["readme.txt"], "zip", 5), (["inner.zip"], "zip", len(inner)),
        (["no-name-hint"], "zip", len(inner)), (["docs/"], "zip", 0),
    ]
    # every file member is readable (issue 10: members are scanned too); folders are not
    assert read == {"readme.txt": b"hello", "inner.zip": inner, "no-name-hint": inner}


def test_a_member_is_read_while_listing_not_after(tmp_path: Path) -> None:
    """The reader holds the archive open only while the walker iterates (it acts as it goes)."""
    path = tmp_path / "outer.zip"
    path.write_bytes(zip_bytes({"inner.zip": zip_bytes({"e": b"x"})}))
    [member] = listed(path)
    assert member.chunks is not None
    with pytest.raises(ArchiveError, match=r"^zip: .*closed"):
        b"".join(member.chunks())


def test_a_zip_behind_a_prefix_is_found_by_its_end_record(tmp_path: Path) -> None:
    path = tmp_path / "self-extracting.exe"
    path.write_bytes(b"MZ" + b"\x00" * 5000 + zip_bytes({"payload.exe": b"MZ..."}))
    assert [m.names for m in listed(path)] == [["payload.exe"]]


@pytest.mark.skipif(shutil.which("7z") is None, reason="p7zip-full missing")
def test_an_encrypted_member_is_listed_but_not_read(tmp_path: Path) -> None:
    (tmp_path / "secret.zip").write_bytes(zip_bytes({"x": b"y"}))
    archive = tmp_path / "locked.zip"
    subprocess.run(["7z", "a", "-tzip", "-pSECRET", str(archive), str(tmp_path / "secret.zip")],
                   check=True, capture_output=True, timeout=60)
    [member] = listed(archive)
    assert member.names == ["secret.zip"]
    assert member.chunks is None  # named .zip, but locked: nothing to read


def test_a_file_that_is_no_container_has_no_members(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_bytes(b"just text, PK not at the start\n" * 10)
    assert listed(path) == []


def test_members_is_lazy_and_a_broken_zip_raises_archive_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(zip_bytes({"a.txt": b"a" * 1000})[:60])  # a local header, then nothing
    found = members(path, path.stat().st_size, path.read_bytes()[:64])
    assert inspect.isgenerator(found)  # nothing read until the walker asks
    with pytest.raises(ArchiveError) as caught:
        list(found)
    assert caught.value.kind == "zip"
    assert str(caught.value) == f"zip: {caught.value.problem}"
    assert caught.value.problem


def test_a_member_that_breaks_while_read_raises_archive_error(tmp_path: Path) -> None:
    data = bytearray(zip_bytes({"inner.zip": zip_bytes({"e": eicar() * 50})}))
    start = data.index(b"inner.zip") + len(b"inner.zip")
    data[start + 10 : start + 40] = b"\xff" * 30  # corrupt the deflated bytes
    path = tmp_path / "corrupt.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"^zip: ") as caught:
        read_while_listing(path)
    assert "closed" not in caught.value.problem  # the bad data, not the closed archive


@needs_testfiles
def test_tnef_attachments_come_with_their_bytes() -> None:
    [member] = listed(TESTFILES / "clam.tnef")
    assert (member.names, member.origin) == (["clam.exe"], "tnef")
    assert member.data == (TESTFILES / "clam.exe").read_bytes()
    assert member.size == len(member.data)
    assert member.chunks is None


@needs_testfiles
def test_a_truncated_tnef_raises_archive_error(tmp_path: Path) -> None:
    path = tmp_path / "winmail.dat"
    path.write_bytes((TESTFILES / "clam.tnef").read_bytes()[:20])  # cut inside a record
    with pytest.raises(ArchiveError, match=r"^tnef: ") as caught:
        listed(path)
    assert caught.value.kind == "tnef"


@needs_testfiles
def test_a_tnef_too_large_to_list_is_refused_before_reading() -> None:
    path = TESTFILES / "clam.tnef"
    with pytest.raises(ArchiveError, match=r"^tnef: too large to list$"):
        list(members(path, MAX_TNEF + 1, path.read_bytes()[:64]))
