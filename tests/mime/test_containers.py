"""Issue 10: every name and every payload inside every container, found by content.

The containers are built at test time with the real tools (7z, tar, gzip, bzip2, xz, zstd,
gcab, arj, jlha, cpio, genisoimage, xorriso, mkfs.fat with mtools, qemu-img); rar, which
no free tool writes, comes from the rarfile sdist's test files (tests/data/rar, ISC).
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import shutil
import sqlite3
import tarfile
import zipfile
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from helpers import containers_build as build
from helpers.mail import RCPT, SENDER, enqueue, folder_of, message
from scanmail import mime
from scanmail.config import load_config
from scanmail.mime.archives import sevenzip
from scanmail.scan.runner import run
from scanmail.testing import TESTFILES

STUB = b"MZ" + b"\0" * 100  # a harmless stand-in for a program
BANNED = [("files/setup.exe", STUB), ("readme.txt", b"read me\n")]
INNOCENT = [("docs/notes.txt", b"quarterly figures\n"), ("readme.txt", b"read me\n")]


def virus() -> list[tuple[str, bytes]]:
    return [("docs/notes.txt", (TESTFILES / "clam.exe").read_bytes())]


Builder = Callable[[list[tuple[str, bytes]], Path], Path]

# format -> how to build it from members; every one is attached under an innocent name.
BUILDERS: dict[str, Builder] = {
    "7z": lambda m, d: build.build_7z(m, d),
    "zip": lambda m, d: build.build_zip(m, d),
    "tar": lambda m, d: build.build_tar(m, d),
    "tar.gz": lambda m, d: build.build_tar(m, d, compression="gz"),
    "tar.bz2": lambda m, d: build.build_tar(m, d, compression="bz2"),
    "tar.xz": lambda m, d: build.build_tar(m, d, compression="xz"),
    "tar.zst": lambda m, d: build.build_tar(m, d, compression="zst"),
    "cab": lambda m, d: build.build_cab(m, d),
    "arj": lambda m, d: build.build_arj(m, d),
    "lzh": lambda m, d: build.build_lzh(m, d),
    "cpio": lambda m, d: build.build_cpio(m, d),
    "iso": lambda m, d: build.build_iso(m, d),
    "iso-xorriso": lambda m, d: build.build_iso(m, d, name="x.iso", tool="xorriso"),
    "udf": lambda m, d: build.build_iso(m, d, name="udf.img", udf=True),
    "fat": lambda m, d: build.build_fat(m, d),
    "fat-mbr": lambda m, d: build.build_fat_mbr(m, d),
    "vhd": lambda m, d: build.build_vhd(m, d),
    "vhdx": lambda m, d: build.build_vhd(m, d, name="disk.vhdx", fmt="vhdx"),
}
SINGLE = ("gz", "bz2", "xz", "zst")


def built(members: list[tuple[str, bytes]], kind: str, where: Path) -> bytes:
    where.mkdir(parents=True, exist_ok=True)
    try:
        return BUILDERS[kind](members, where).read_bytes()
    except build.ToolMissing as exc:
        pytest.skip(f"{exc} is not installed: cannot write {kind}")


def reasons(root: Path) -> dict[str, str]:
    db = sqlite3.connect(root / "var" / "events.sqlite")
    rows = dict(db.execute("SELECT qid, verdict || ':' || reason FROM events WHERE kind='scan'"))
    db.close()
    return rows


def lying(data: bytes, name: str, ctype: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"], msg["To"], msg["Subject"] = SENDER, RCPT, "holiday pictures"
    msg.set_content("see attached")
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def test_every_format_banned_infected_and_innocent(spool_root, write_env, tmp_path):
    """For each format: a banned member name, a test virus under an innocent name, and an
    innocent container (which passes), in one pass of the real gateway."""
    config = load_config(write_env())
    expect: dict[str, tuple[str, str]] = {}

    def queue(label: str, data: bytes, want: str, name: str = "attachment.bin") -> None:
        expect[enqueue(spool_root, message(label, attachments=[(name, data)])).name] = (
            label, want)

    for kind in BUILDERS:
        queue(f"{kind} banned", built(BANNED, kind, tmp_path / kind / "b"),
              "quarantine:banned")
        queue(f"{kind} virus", built(virus(), kind, tmp_path / kind / "v"),
              "quarantine:infected")
        queue(f"{kind} innocent", built(INNOCENT, kind, tmp_path / kind / "i"),
              "deliver:clean")
    for kind in SINGLE:  # one compressed file: the name its decompressor would write
        queue(f"{kind} banned", build.build_single(STUB, tmp_path / kind, inner_name="setup.exe",
                                                   compression=kind).read_bytes(),
              "quarantine:banned", name=f"setup.exe.{kind}")
        queue(f"{kind} virus", build.build_single(virus()[0][1], tmp_path / kind,
                                                  inner_name="notes.txt", compression=kind)
              .read_bytes(), "quarantine:infected", name=f"notes.txt.{kind}")
        queue(f"{kind} innocent", build.build_single(b"hello\n", tmp_path / kind,
                                                     inner_name="notes.txt", compression=kind)
              .read_bytes(), "deliver:clean", name=f"notes.txt.{kind}")
    # gzip -N keeps the original name in the header: it counts, whatever the file is called
    stored = build.build_single(STUB, tmp_path / "gzn", inner_name="setup.exe",
                                compression="gz").read_bytes()
    queue("gz stored name", stored, "quarantine:banned", name="holiday.gz")
    for kind in ("rar3", "rar5"):  # real files: only innocent names in them
        queue(f"{kind} innocent", build.rar_sample(kind, tmp_path / kind).read_bytes(),
              "deliver:clean")
    summary = run(config)
    assert summary.left == 0
    got = reasons(spool_root)
    wrong = {label: (want, got.get(qid)) for qid, (label, want) in expect.items()
             if got.get(qid) != want}
    assert wrong == {}
    for qid, (_label, want) in expect.items():
        assert folder_of(spool_root, qid) == [
            "outgoing" if want.startswith("deliver") else "quarantine"]


def test_rar_member_names_are_checked(spool_root, write_env, tmp_path):
    """rar 3 and 5 (no free writer: real files) show their names, at their path."""
    (spool_root / "etc" / "matches.bad").write_text("filename=.*/sub/dir1/file1\\.txt$\n")
    config = load_config(write_env())
    qids = [enqueue(spool_root, message(k, attachments=[("a.bin", build.rar_sample(
        k, tmp_path / k).read_bytes())])).name for k in ("rar3", "rar5")]
    run(config)
    got = reasons(spool_root)
    assert [got[q] for q in qids] == ["quarantine:banned"] * 2


def test_nested_containers_show_their_path(tmp_path):
    """An ISO holding a 7z holding a zip holding setup.exe: every level named."""
    inner_zip = build.build_zip(BANNED, tmp_path / "z")
    seven = build.build_7z([("deep.zip", inner_zip.read_bytes())], tmp_path / "s")
    iso = build.build_iso([("files/inner.7z", seven.read_bytes())], tmp_path / "i")
    names = explode(message("nested", attachments=[("invoice.iso", iso.read_bytes())]),
                    tmp_path / "w").names
    assert "invoice.iso/files/inner.7z/deep.zip/files/setup.exe" in names
    assert "setup.exe" in names


def test_lying_name_and_type(spool_root, write_env, tmp_path):
    """A 7z attached as photo.jpg with Content-Type image/png is read as a 7z."""
    config = load_config(write_env())
    data = build.build_7z(BANNED, tmp_path).read_bytes()
    qid = enqueue(spool_root, lying(data, "photo.jpg", "image/png")).name
    run(config)
    assert reasons(spool_root)[qid] == "quarantine:banned"
    record = (spool_root / "quarantine" / f"{qid}.d" / "record").read_text()
    assert "photo.jpg/files/setup.exe" in record


def encrypted_cases(tmp_path: Path) -> dict[str, bytes]:
    return {
        "7z": build.build_7z(INNOCENT, tmp_path / "a", password="pw"),
        "7z headers": build.build_7z(INNOCENT, tmp_path / "b", password="pw",
                                     encrypt_headers=True),
        "zip": build.build_zip(INNOCENT, tmp_path / "c", password="pw"),
        "zip aes": build.build_zip(INNOCENT, tmp_path / "d", password="pw", aes=True),
        "rar3": build.rar_sample("rar3-psw", tmp_path / "e"),
        "rar3 headers": build.rar_sample("rar3-hpsw", tmp_path / "f"),
        "rar5": build.rar_sample("rar5-psw", tmp_path / "g"),
        "rar5 headers": build.rar_sample("rar5-hpsw", tmp_path / "h"),
    }


@pytest.mark.parametrize("setting", ["quarantine", "deliver"])
def test_encrypted_archives(spool_root, write_env, tmp_path, setting):
    config = load_config(write_env(ENCRYPTED_ARCHIVES=setting))
    cases = {label: path.read_bytes() for label, path in encrypted_cases(tmp_path).items()}
    qids = {enqueue(spool_root, message(label, attachments=[("secret.bin", data)])).name: label
            for label, data in cases.items()}
    banned = enqueue(spool_root, message("banned", attachments=[(
        "secret.bin", build.build_7z(BANNED, tmp_path / "x", password="pw").read_bytes())])).name
    run(config)
    got = reasons(spool_root)
    want = "quarantine:encrypted" if setting == "quarantine" else "deliver:clean"
    assert {label: got[qid] for qid, label in qids.items()} == dict.fromkeys(cases, want)
    assert got[banned] == "quarantine:banned"  # names that can be read come first


def explode(data: bytes, workdir: Path, limits: mime.Limits | None = None) -> mime.Explosion:
    workdir.mkdir(mode=0o700)
    source = workdir.parent / f"{workdir.name}.eml"
    source.write_bytes(data)
    with open(source, "rb") as handle:
        return mime.explode(handle, workdir, limits or mime.Limits())


def test_huge_expansion_stops_at_the_byte_limit(tmp_path):
    zeros = b"\0" * (32 << 20)
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        info = tarfile.TarInfo("zeros.txt")
        info.size = len(zeros)
        tar.addfile(info, io.BytesIO(zeros))
    seven = build.build_7z([("zeros.txt", zeros)], tmp_path / "s").read_bytes()
    limits = mime.Limits(max_bytes=8 << 20)
    for i, data in enumerate((tgz.getvalue(), gzip.compress(zeros), seven)):
        with pytest.raises(mime.LimitExceeded):
            explode(message("bomb", attachments=[("a.bin", data)]), tmp_path / f"w{i}", limits)


def test_many_members_and_deep_nesting_stop(tmp_path):
    many = io.BytesIO()
    with tarfile.open(fileobj=many, mode="w") as tar:
        for i in range(300):
            info = tarfile.TarInfo(f"f{i}.txt")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(mime.LimitExceeded, match="parts"):
        explode(message("many", attachments=[("a.bin", many.getvalue())]), tmp_path / "a",
                mime.Limits(max_parts=100))
    deep = b"the bottom"
    for level in range(30):  # tar.gz in tar.gz (libarchive undoes stacked gzip in one go)
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            info = tarfile.TarInfo(f"level{level}.tgz")
            info.size = len(deep)
            tar.addfile(info, io.BytesIO(deep))
        deep = out.getvalue()
    with pytest.raises(mime.LimitExceeded, match="deeper"):
        explode(message("deep", attachments=[("a.bin", deep)]), tmp_path / "b")


def test_self_containing_zip_stops(tmp_path):
    """A zip whose member is the zip itself, again and again: the depth limit ends it."""
    data = b"seed"
    for _ in range(25):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr("again.zip", data)
        data = out.getvalue()
    with pytest.raises(mime.LimitExceeded):
        explode(message("droste", attachments=[("a.zip", data)]), tmp_path / "w")


def test_bomb_message_is_unchecked(spool_root, write_env):
    config = load_config(write_env(DECODE_MAX_BYTES="4M"))
    qid = enqueue(spool_root, message("bomb", attachments=[
        ("a.bin", gzip.compress(b"\0" * (16 << 20)))])).name
    run(config)
    assert reasons(spool_root)[qid] == "quarantine:unchecked"


def hostile_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in ("../escaped.txt", "/tmp/scanmail-absolute.txt", "a/../../b.txt"):
            info = tarfile.TarInfo(name)
            info.size = 5
            tar.addfile(info, io.BytesIO(b"owned"))
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
        through = tarfile.TarInfo("link/passwd")
        through.size = 5
        tar.addfile(through, io.BytesIO(b"owned"))
        hard = tarfile.TarInfo("hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/shadow"
        tar.addfile(hard)
        dev = tarfile.TarInfo("dev/sda")
        dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 8, 0
        tar.addfile(dev)
    return out.getvalue()


def hostile_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in ("../escaped.txt", "/tmp/scanmail-absolute.txt", "..\\..\\win.txt"):
            zf.writestr(name, b"owned")
    return out.getvalue()


def test_hostile_member_names_write_nothing_outside(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    tar = hostile_tar()
    seven = build.build_7z([("inner.tar", tar)], tmp_path / "s").read_bytes()
    arj_dir = tmp_path / "arj"
    arj = built([("x.tar", tar)], "arj", arj_dir)
    for i, data in enumerate((tar, hostile_zip(), seven, arj)):
        work = base / f"w{i}"
        explosion = explode(message("hostile", attachments=[("a.bin", data)]), work)
        assert any("escaped.txt" in n for n in explosion.names)
        for path in work.rglob("*"):
            assert path.is_file() and not path.is_symlink()
            assert path.parent == work  # flat, sanitized names only
        assert not [p for p in work.iterdir() if "~" in p.name]  # scratch removed
    assert sorted(p.name for p in base.iterdir() if p.is_dir()) == [f"w{i}" for i in range(4)]
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/scanmail-absolute.txt").exists()
    assert Path("/etc/passwd").read_bytes()[:5] != b"owned"


def test_every_member_is_written_for_the_scanner(tmp_path):
    """Members of formats ClamAV cannot unpack reach the scanner as files of their own."""
    lzh = built([("docs/notes.txt", b"payload-bytes")], "lzh", tmp_path / "l")
    work = tmp_path / "w"
    explosion = explode(message("lzh", attachments=[("a.bin", lzh)]), work)
    member = next(p for p in explosion.parts if "a.bin/docs/notes.txt" in p.names)
    assert member.path is not None and member.path.read_bytes() == b"payload-bytes"
    assert member.origin == "lzh"


@pytest.mark.skipif(shutil.which("7z") is None, reason="7z (p7zip-full) is not installed")
def test_7z_scratch_is_inside_the_work_folder(tmp_path):
    fat = built(INNOCENT, "fat", tmp_path / "f")
    work = tmp_path / "w"
    explode(message("fat", attachments=[("a.bin", fat)]), work)
    assert sorted(os.listdir(tmp_path)) == ["f", "w", "w.eml"]


def test_one_unreadable_zip_member_hides_none_of_the_others(tmp_path: Path) -> None:
    """Issue 14 item 6: a member that breaks while read; every later name is still listed."""
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("first.txt", b"x" * 5000)
        out.writestr("later.exe", b"MZ" + b"\0" * 100)
    data = bytearray(archive.read_bytes())
    start = data.index(b"first.txt") + len("first.txt")  # first local header's name end
    data[start + 10 : start + 40] = b"\xff" * 30  # its deflate stream, now broken
    mail = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            b"Content-Type: application/zip; name=a.zip\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(bytes(data)) + b"--b--\r\n")
    work = tmp_path / "work-item6"
    work.mkdir()
    source = tmp_path / "item6.eml"
    source.write_bytes(mail)
    with open(source, "rb") as handle:
        found = mime.explode(handle, work, mime.Limits())
    assert "a.zip/later.exe" in found.names and "a.zip/first.txt" in found.names
    assert any(defect.startswith("zip ") for defect in found.defects)


@pytest.mark.skipif(shutil.which("7z") is None, reason="7z (p7zip-full) is not installed")
def test_a_7z_without_7zip_is_unchecked(tmp_path, monkeypatch):
    """7-Zip missing from PATH: the names inside cannot be read, so the message cannot be
    judged (before, only a defect was noted and clamd's word let it pass)."""
    seven = built(BANNED, "7z", tmp_path / "s")
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(mime.LimitExceeded, match=r"7z not installed .*p7zip-full"):
        explode(message("7z", attachments=[("a.bin", seven)]), tmp_path / "w")


@pytest.mark.skipif(shutil.which("7z") is None, reason="7z (p7zip-full) is not installed")
def test_a_7z_that_7zip_does_not_finish_in_time_is_unchecked(tmp_path, monkeypatch):
    seven = built(BANNED, "7z", tmp_path / "s")
    monkeypatch.setattr(sevenzip, "LIST_TIMEOUT", 0.0005)  # no 7z run is this fast
    with pytest.raises(mime.LimitExceeded, match="no answer within"):
        explode(message("7z", attachments=[("a.bin", seven)]), tmp_path / "w")
    assert not list((tmp_path / "w").glob("*~x"))  # its scratch folder is gone
