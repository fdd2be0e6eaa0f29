"""7z, rar (4 and 5), arj, UDF, VHD/VHDX and disk images (FAT, NTFS, MBR, GPT), by 7-Zip.

7-Zip (Debian's p7zip-full, 7-Zip proper since trixie) is the one free tool that reads all
of these, shows member names where others stop (an encrypted 7z or rar still lists its
names unless its headers are encrypted) and follows a disk image's chain (VHD, then its
partition table, then the FAT inside). It runs as a subprocess: an argument list, never a
shell; a timeout; its listing written to a file and read only up to a bound; and one
extraction of the whole container into the caller's scratch folder, only once the
declared sizes fit the budget, under a file-size limit (prlimit), so that a lying header
cannot fill the disk.
"""

from __future__ import annotations

import os
import select
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scanmail.mime.archives.member import COPY, ArchiveError, Member
from scanmail.mime.part import LimitExceeded

SEVEN_ZIP = "7z"
LIST_TIMEOUT = 30.0  # seconds
EXTRACT_TIMEOUT = 120.0
MAX_LISTING = 16 << 20  # bytes of `7z l -slt` output read
MAX_MEMBERS = 100_000
_NO_PASSWORD = "-p-"  # a wrong password: 7-Zip never waits for one on the terminal
_TYPE = {"udf": ["-tudf"]}  # a UDF bridge image would otherwise open as plain ISO 9660


@dataclass(frozen=True)
class _Listed:
    name: str
    size: int
    is_file: bool
    encrypted: bool


def members(path: Path, kind: str, scratch: Path, budget: int) -> Iterator[Member]:
    """List the container, then extract it once (on first read) and hand out each file."""
    scratch.mkdir(mode=0o700)
    try:
        listed = _list(path, kind, scratch)
        if listed is None:  # headers encrypted: no name to show
            yield Member([], kind, 0, encrypted=True)
            return
        readable = [m for m in listed if m.is_file and not m.encrypted and m.size > 0]
        declared = sum(m.size for m in readable)
        if declared > budget:
            raise LimitExceeded(f"{kind} members declare {declared} bytes, over the limit")
        out = scratch / "x"
        extracted: list[bool] = []

        def extract() -> None:
            if not extracted:
                out.mkdir(mode=0o700)
                _extract(path, kind, scratch, out, budget)
                extracted.append(True)

        for item in listed:
            if not item.is_file:
                yield Member([item.name], kind, 0)
            elif item.encrypted:
                yield Member([item.name], kind, item.size, encrypted=True)
            elif item.size == 0:
                yield Member([item.name], kind, 0, data=b"")
            else:
                yield Member([item.name], kind, item.size, _chunks(out, item, kind, extract))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args: list[str], scratch: Path, timeout: float, stdout: int) -> int:
    """7-Zip's exit code. A 7-Zip that is missing or hangs leaves the names unread: the
    message is unchecked (never passed on clamd's word alone), not merely odd."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
           "HOME": str(scratch), "TMPDIR": str(scratch)}
    try:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout,
                                   stderr=subprocess.STDOUT, cwd=scratch, env=env)
    except FileNotFoundError:
        raise LimitExceeded(f"{args[0]} not installed (Debian package "
                            f"{'util-linux' if args[0] == 'prlimit' else 'p7zip-full'}): "
                            "7z, rar, arj, UDF and disk images cannot be read") from None
    with process:
        if not _exited(process, timeout):
            process.kill()
            process.wait()
            raise LimitExceeded(f"7z gave no answer within {timeout:.0f} s")
        return process.returncode


def _exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for the process, at most timeout seconds: on its pidfd, not by polling (the
    standard wait(timeout) sleeps in steps, adding up to 50 ms to each run)."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:  # a kernel before 5.3
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if ready:
        process.wait()
    return bool(ready)


def _list(path: Path, kind: str, scratch: Path) -> list[_Listed] | None:
    listing = scratch / "listing"
    fd = os.open(listing, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        code = _run([SEVEN_ZIP, "l", "-slt", _NO_PASSWORD, "-bd", "-sccUTF-8",
                     *_TYPE.get(kind, []), "--", str(path)], scratch, LIST_TIMEOUT, fd)
    finally:
        os.close(fd)
    with open(listing, "rb") as handle:
        text = handle.read(MAX_LISTING + 1).decode("utf-8", "replace")
    if len(text) > MAX_LISTING:
        raise LimitExceeded(f"{kind} listing over {MAX_LISTING} bytes")
    if "Cannot open encrypted archive" in text:
        return None
    head, rule, items = text.partition("\n----------\n")
    if code not in (0, 1) or not rule:
        last = next((line for line in reversed(head.splitlines()) if line.strip()), "")
        raise ArchiveError(kind, f"7z cannot list it (exit {code}): {last[:200]}")
    found: list[_Listed] = []
    for block in items.split("\n\n"):
        fields = dict(line.partition(" = ")[::2] for line in block.splitlines() if " = " in line)
        name = fields.get("Path")
        if name is None:
            continue
        if len(found) >= MAX_MEMBERS:
            raise LimitExceeded(f"{kind} lists more than {MAX_MEMBERS} members")
        attributes = fields.get("Attributes", "")
        mode = attributes.rsplit(" ", 1)[-1] if " " in attributes else ""
        folder = fields.get("Folder") == "+" or attributes.startswith("D") or mode[:1] == "d"
        special = mode[:1] in ("l", "c", "b", "p", "s") or bool(fields.get("Symbolic Link"))
        size = fields.get("Size", "")
        found.append(_Listed(name, int(size) if size.isdigit() else 0,
                             not (folder or special), fields.get("Encrypted") == "+"))
    return found


def _extract(path: Path, kind: str, scratch: Path, out: Path, budget: int) -> None:
    log = scratch / "extract.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        # prlimit: no file 7-Zip writes may grow past the budget, whatever a header says.
        code = _run(["prlimit", f"--fsize={max(budget, 1) + 1}", SEVEN_ZIP, "x",
                     _NO_PASSWORD, "-bd", "-y", f"-o{out}", *_TYPE.get(kind, []),
                     "--", str(path)], scratch, EXTRACT_TIMEOUT, fd)
    finally:
        os.close(fd)
    if code not in (0, 1, 2):  # 2: some members failed (their files are missing then)
        raise ArchiveError(kind, f"7z cannot extract it (exit {code})")


def _chunks(out: Path, item: _Listed, kind: str,
            extract: Callable[[], None]) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        extract()
        target = _inside(out, item.name)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            raise ArchiveError(kind, f"member {item.name!r} was not extracted") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ArchiveError(kind, f"member {item.name!r} is not a file")
            while chunk := handle.read(COPY):
                yield chunk
    return chunks


def _inside(out: Path, name: str) -> Path:
    """Where 7-Zip put a member, never a path that leads out of its folder."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    target = out.joinpath(*parts) if parts else out / "_"
    real = os.path.realpath(target)
    if not real.startswith(os.path.realpath(out) + os.sep):
        raise ArchiveError("7z", f"member {name!r} leads outside its folder")
    return target
