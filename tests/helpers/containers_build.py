"""Build small container fixtures at test time with the REAL tools.

Every builder takes ``members`` -- a sequence of ``(name, data)`` pairs where
``name`` may contain ``/`` for sub folders -- and an output directory, and
returns the path of the archive it wrote.  Tools are run with argument lists
(never a shell) and a timeout.  A builder raises :class:`ToolMissing` when the
tool it needs is not installed, so a test can skip.

Which tool writes which format (Debian bookworm):

=================  =========================================================
format             writer
=================  =========================================================
7z (+ -p, -mhe)    ``7z a -t7z`` (p7zip-full, really 7-Zip 26.02)
zip (+ ZipCrypto)  ``7z a -tzip [-pPW]``; AES with ``-mem=AES256``
tar, tar.gz/bz2/   GNU ``tar -c [-z|-j|-J|--zstd]``
xz/zst
gz/bz2/xz/zst      ``gzip -N``, ``bzip2``, ``xz``, ``zstd`` (``-c`` to stdout)
cab                ``gcab -c`` (``-z`` for MSZIP)
arj                ``arj a``
lzh/lha            ``jlha a`` (package jlha-utils, Java; lhasa can't write)
cpio               ``cpio -o -H newc``
ISO9660+J+RR       ``genisoimage -J -R`` or ``xorriso -as mkisofs -J -R``
ISO+UDF bridge     ``genisoimage -udf``
FAT                ``mkfs.fat`` + ``mmd``/``mcopy`` (mtools)
FAT in MBR         MBR written here in Python, FAT via mtools ``-i img@@off``
VHD / VHDX         ``qemu-img convert -O vpc`` / ``-O vhdx`` of a raw FAT
rar3 / rar5        no free writer: copied from the rarfile sdist (ISC) into
                   tests/data/rar/ (plain, file-encrypted, header-encrypted)
=================  =========================================================
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

Members = Sequence[tuple[str, bytes]]

TIMEOUT = 60.0
RAR_SAMPLES = Path(__file__).resolve().parent.parent / "data" / "rar"


class ToolMissing(RuntimeError):
    """A tool needed to build a fixture is not installed."""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(tool)
    return path


def _run(args: Sequence[str], *, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    _need(args[0])
    proc = subprocess.run(
        list(args),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{args[0]} failed rc={proc.returncode}: {proc.stderr.decode(errors='replace')[-800:]}"
        )
    return proc.stdout


def _stage(members: Members, root: Path) -> list[str]:
    """Write members below ``root``; return their relative names (sorted)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    names: list[str] = []
    for name, data in members:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"fixture member name must be relative: {name!r}")
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        names.append(rel.as_posix())
    return sorted(names)


def _fresh(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    return out


# --------------------------------------------------------------------------- 7z / zip


def build_7z(
    members: Members,
    out_dir: Path,
    *,
    name: str = "archive.7z",
    password: str | None = None,
    encrypt_headers: bool = False,
) -> Path:
    stage = out_dir / (name + ".stage")
    names = _stage(members, stage)
    out = _fresh(out_dir / name)
    args = ["7z", "a", "-t7z", "-bd", "-y"]
    if password is not None:
        args.append(f"-p{password}")
        if encrypt_headers:
            args.append("-mhe=on")
    _run([*args, str(out), "--", *names], cwd=stage)
    return out


def build_zip(
    members: Members,
    out_dir: Path,
    *,
    name: str = "archive.zip",
    password: str | None = None,
    aes: bool = False,
) -> Path:
    stage = out_dir / (name + ".stage")
    names = _stage(members, stage)
    out = _fresh(out_dir / name)
    args = ["7z", "a", "-tzip", "-bd", "-y"]
    if password is not None:
        args.append(f"-p{password}")
        if aes:
            args.append("-mem=AES256")
    _run([*args, str(out), "--", *names], cwd=stage)
    return out


# --------------------------------------------------------------------------- tar family

_TAR_FLAGS = {"": [], "gz": ["-z"], "bz2": ["-j"], "xz": ["-J"], "zst": ["--zstd"]}


def build_tar(
    members: Members, out_dir: Path, *, compression: str = "", name: str | None = None
) -> Path:
    """``compression`` is one of '', 'gz', 'bz2', 'xz', 'zst'."""
    if compression not in _TAR_FLAGS:
        raise ValueError(compression)
    if compression == "zst":
        _need("zstd")
    fname = name or ("archive.tar" + (f".{compression}" if compression else ""))
    stage = out_dir / (fname + ".stage")
    names = _stage(members, stage)
    out = _fresh(out_dir / fname)
    _run(["tar", "-c", *_TAR_FLAGS[compression], "-f", str(out), "-C", str(stage), "--", *names])
    return out


_SINGLE = {
    "gz": ["gzip", "-c", "-N", "-9"],
    "bz2": ["bzip2", "-c"],
    "xz": ["xz", "-c"],
    "zst": ["zstd", "-q", "-c"],
}


def build_single(data: bytes, out_dir: Path, *, inner_name: str, compression: str) -> Path:
    """Compress one file; output is ``inner_name + '.' + compression``.

    gzip stores ``inner_name`` as FNAME (``-N``), the others store no name.
    """
    stage = out_dir / (inner_name + f".{compression}.stage")
    _stage([(inner_name, data)], stage)
    out = _fresh(out_dir / f"{inner_name}.{compression}")
    out.write_bytes(_run([*_SINGLE[compression], inner_name], cwd=stage))
    return out


# --------------------------------------------------------------------------- cab / arj / lzh / cpio


def build_cab(
    members: Members, out_dir: Path, *, name: str = "archive.cab", compress: bool = True
) -> Path:
    stage = out_dir / (name + ".stage")
    names = _stage(members, stage)
    out = _fresh(out_dir / name)
    args = ["gcab", "-c"] + (["-z"] if compress else [])
    _run([*args, str(out), *names], cwd=stage)
    return out


def build_arj(members: Members, out_dir: Path, *, name: str = "archive.arj") -> Path:
    stage = out_dir / (name + ".stage")
    names = _stage(members, stage)
    out = _fresh(out_dir / name)
    # -y: assume yes; arj keeps relative paths given on the command line.
    _run(["arj", "a", "-y", str(out), *names], cwd=stage)
    return out


def build_lzh(members: Members, out_dir: Path, *, name: str = "archive.lzh") -> Path:
    stage = out_dir / (name + ".stage")
    names = _stage(members, stage)
    out = _fresh(out_dir / name)
    _run(["jlha", "a", str(out), *names], cwd=stage)
    return out


def build_cpio(members: Members, out_dir: Path, *, name: str = "archive.cpio") -> Path:
    stage = out_dir / (name + ".stage")
    names = _stage(members, stage)
    out = _fresh(out_dir / name)
    data = _run(
        ["cpio", "-o", "-H", "newc", "--quiet"], cwd=stage, stdin=("\n".join(names) + "\n").encode()
    )
    out.write_bytes(data)
    return out


# --------------------------------------------------------------------------- optical


def build_iso(
    members: Members,
    out_dir: Path,
    *,
    name: str = "archive.iso",
    tool: str = "genisoimage",
    udf: bool = False,
) -> Path:
    """ISO 9660 with Joliet and Rock Ridge; ``udf=True`` adds the UDF bridge."""
    stage = out_dir / (name + ".stage")
    _stage(members, stage)
    out = _fresh(out_dir / name)
    if tool == "genisoimage":
        args = ["genisoimage", "-quiet", "-J", "-R", "-V", "FIXTURE"]
        if udf:
            args.append("-udf")
    elif tool == "xorriso":
        if udf:
            raise ValueError("xorriso writes no UDF")
        args = ["xorriso", "-as", "mkisofs", "-quiet", "-J", "-R", "-V", "FIXTURE"]
    else:
        raise ValueError(tool)
    _run([*args, "-o", str(out), str(stage)])
    return out


# --------------------------------------------------------------------------- disk images


def _mtools_fill(image: str, members: Members) -> None:
    made: set[str] = set()
    env_safe = ["-i", image]
    for mname, _data in members:
        parts = mname.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in made:
                _run(["mmd", *env_safe, "::/" + d])
                made.add(d)
    staging = Path(image.split("@@")[0] + ".files")
    _stage(members, staging)
    for mname, _ in members:
        _run(["mcopy", *env_safe, "-o", str(staging / mname), "::/" + mname])


def build_fat(
    members: Members, out_dir: Path, *, name: str = "disk.img", size_mib: int = 4
) -> Path:
    """Superfloppy FAT image (no partition table)."""
    out = _fresh(out_dir / name)
    with out.open("wb") as fh:
        fh.truncate(size_mib * 1024 * 1024)
    _run(["mkfs.fat", "-n", "FIXTURE", str(out)])
    _mtools_fill(str(out), members)
    return out


def build_fat_mbr(
    members: Members, out_dir: Path, *, name: str = "disk_mbr.img", size_mib: int = 6
) -> Path:
    """Disk with an MBR and one FAT16 partition starting at 1 MiB."""
    part = build_fat(members, out_dir, name=name + ".part", size_mib=size_mib - 1)
    out = _fresh(out_dir / name)
    sectors = (size_mib - 1) * 2048
    entry = struct.pack("<B3sB3sII", 0x00, b"\xfe\xff\xff", 0x06, b"\xfe\xff\xff", 2048, sectors)
    mbr = bytearray(512)
    mbr[446 : 446 + 16] = entry
    mbr[510:512] = b"\x55\xaa"
    with out.open("wb") as fh:
        fh.write(mbr)
        fh.write(b"\0" * (2048 * 512 - 512))
        fh.write(part.read_bytes())
    part.unlink()
    return out


def build_vhd(
    members: Members, out_dir: Path, *, name: str = "disk.vhd", fmt: str = "vpc", mbr: bool = True
) -> Path:
    """VHD (``fmt='vpc'``) or VHDX (``fmt='vhdx'``) holding a FAT image."""
    raw = (build_fat_mbr if mbr else build_fat)(members, out_dir, name=name + ".raw")
    out = _fresh(out_dir / name)
    _run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(out)])
    raw.unlink()
    return out


# --------------------------------------------------------------------------- rar


def rar_sample(kind: str, out_dir: Path, *, name: str | None = None) -> Path:
    """Copy a vendored real rar file.

    kinds: rar3, rar3-psw (file data encrypted), rar3-hpsw (headers encrypted),
    rar5, rar5-psw, rar5-hpsw.  Member names cannot be chosen (no free writer).
    """
    src = {
        "rar3": "rar3-subdirs.rar",
        "rar3-psw": "rar3-comment-psw.rar",
        "rar3-hpsw": "rar3-comment-hpsw.rar",
        "rar5": "rar5-subdirs.rar",
        "rar5-psw": "rar5-psw.rar",
        "rar5-hpsw": "rar5-hpsw.rar",
    }[kind]
    out = _fresh(out_dir / (name or f"{kind}.rar"))
    shutil.copyfile(RAR_SAMPLES / src, out)
    return out
