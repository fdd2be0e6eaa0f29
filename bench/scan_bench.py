"""Benchmark: scanmail --once against clamd alone, on a generated mixed spool.

    .venv/bin/python bench/scan_bench.py [--messages 3000] [--rounds 3] [--workers 4]
                                         [--raw-scan lean|whole]

Prints messages/second for `scanmail --once`, the floor (clamd alone scanning the same raw
messages over INSTREAM with two connections), their ratio (target: at most 1.3), whether
every verdict was right, and the peak RSS of scanmail on a message with a 50 MB
attachment (target: under 200 MB). Each timed run starts with a freshly started clamd,
so neither benefits from the other's scan cache; with --rounds the two are measured in
turn that many times and the median ratio is given. Also the CPU clamd and scanmail used.
Loopback only; bounded; not a test.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from scanmail.admin.init import create_spool
from scanmail.config import load_config
from scanmail.scan.scanner import ClamdScanner, Target
from scanmail.spool import Envelope, Spool, list_complete, read_spool_file
from scanmail.testing import TESTFILES, PrivateClamd, eicar

WORDS = [
    "invoice", "meeting", "report", "quarterly", "budget", "project", "schedule", "review",
    "update", "team", "customer", "order", "shipment", "contract", "proposal", "draft",
    "final", "agenda", "minutes",
]


def text(rng: random.Random, size: int) -> str:
    words = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def docx(rng: random.Random, size: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", f"<w:document>{text(rng, size)}</w:document>")
        zf.writestr("word/media/image1.png", rng.randbytes(size // 2))
    return out.getvalue()


def pdf(rng: random.Random, size: int) -> bytes:
    stream = rng.randbytes(size)
    return (b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
            b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
            b"3 0 obj <</Length " + str(len(stream)).encode() + b">> stream\n"
            + stream + b"\nendstream endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n")


def archive(rng: random.Random, size: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("notes.txt", text(rng, size // 4))
        zf.writestr("data.bin", rng.randbytes(size))
    return out.getvalue()


def _tool_archive(rng: random.Random, size: int, kind: str) -> bytes:
    """A 7z or ISO image of the same members, written by the real tool (7z, genisoimage)."""
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        (stage / "notes.txt").write_text(text(rng, size // 4))
        (stage / "data.bin").write_bytes(rng.randbytes(size))
        out = Path(tmp) / f"out.{kind}"
        if kind == "7z":
            args = ["7z", "a", "-t7z", "-bd", "-y", str(out), "notes.txt", "data.bin"]
        else:
            args = ["genisoimage", "-quiet", "-J", "-R", "-o", str(out), str(stage)]
        subprocess.run(args, cwd=stage, check=True, capture_output=True, timeout=60)
        return out.read_bytes()


def tgz(rng: random.Random, size: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in (("notes.txt", text(rng, size // 4).encode()),
                           ("data.bin", rng.randbytes(size))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


ATTACHMENTS = {
    "docx": docx, "pdf": pdf, "zip": archive, "tar.gz": tgz,
    "7z": lambda rng, size: _tool_archive(rng, size, "7z"),
    "iso": lambda rng, size: _tool_archive(rng, size, "iso"),
}

# matches.bad bans .iso names (the image would not be scanned): a disc sent as data
EXTENSION = {"iso": "dat"}


def make_message(rng: random.Random, i: int) -> tuple[bytes, str]:
    """One message and the folder it must end in."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"user{i}@outside.example"
    msg["To"] = "staff@corp.example"
    msg["Subject"] = f"{rng.choice(WORDS)} {i}"
    msg["Message-ID"] = f"<bench{i}.{rng.random()}@outside.example>"
    roll = rng.random()
    body = text(rng, rng.randint(500, 20_000))
    msg.set_content(body)
    if roll < 0.35:
        msg.add_alternative(f"<html><body><p>{body}</p></body></html>", subtype="html")
    where = "outgoing"
    if 0.70 <= roll < 0.95:
        size = rng.choice([50_000, 200_000, 500_000, 1_000_000, 2_000_000])
        kind = rng.choice(["docx", "pdf", "zip", "docx", "pdf", "zip", "tar.gz", "7z", "iso"])
        data = ATTACHMENTS[kind](rng, size)
        msg.add_attachment(data, maintype="application", subtype="octet-stream",
                           filename=f"{rng.choice(WORDS)}-{i}.{EXTENSION.get(kind, kind)}")
    elif 0.95 <= roll < 0.98:
        sample = rng.choice([eicar(), (TESTFILES / "clam.exe").read_bytes(),
                             (TESTFILES / "clam.zip").read_bytes()])
        msg.add_attachment(sample, maintype="application", subtype="octet-stream",
                           filename=f"scan-{i}.pdf")
        where = "quarantine"
    elif roll >= 0.98:
        msg.add_attachment(b"MZ" + rng.randbytes(30_000), maintype="application",
                           subtype="octet-stream", filename=f"update-{i}.exe")
        where = "quarantine"
    return msg.as_bytes(), where


def generate(root: Path, count: int) -> dict[str, str]:
    rng = random.Random(42)
    spool = Spool(root)
    expected = {}
    for i in range(count):
        data, where = make_message(rng, i)
        path = spool.write("incoming", Envelope(f"user{i}@outside.example",
                                                ("staff@corp.example",)), [data])
        expected[path.name] = where
    return expected


def floor(socket_path: Path, root: Path) -> float:
    """Seconds clamd alone takes for every raw message, over INSTREAM, two connections."""
    config = load_config(root / "etc" / "scanmail.env")
    scanner = ClamdScanner(config)
    targets = []
    for path in list_complete(root / "incoming"):
        spool_file = read_spool_file(path)
        targets.append(Target(path, spool_file.body_offset))
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(scanner.scan_target, targets))
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a running process has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def scanmail_once(env: Path) -> tuple[float, int]:
    """Seconds and exit code of one `scanmail --once` process."""
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-c", "from scanmail.cli.scan import main; main()",
         "--config", str(env), "--once"],
        capture_output=True, check=False,
    )
    seconds = time.monotonic() - started
    if process.returncode != 0:
        sys.stderr.write(process.stderr.decode())
    return seconds, process.returncode


def peak_rss_50mb(base: Path, clamd: PrivateClamd) -> int:
    """Peak RSS (KB) of scanmail --once on one message with a 50 MB attachment."""
    root = base / "spool-50mb"
    create_spool(root)
    env = root / "etc" / "scanmail.env"
    env.write_text(f"SPOOL_DIR={root}\nCLAMD_SOCKET={clamd.socket}\n")
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "big@outside.example"
    msg["To"] = "staff@corp.example"
    msg["Subject"] = "the big one"
    msg.set_content("see attached")
    msg.add_attachment(os.urandom(50 << 20), maintype="application",
                       subtype="octet-stream", filename="video.bin")
    Spool(root).write("incoming", Envelope("big@outside.example", ("staff@corp.example",)),
                      [msg.as_bytes()])
    del msg
    # VmHWM, read by the child at exit: ru_maxrss would count the pages of this bench
    # process that the child shared between fork and exec.
    process = subprocess.run(
        [sys.executable, "-c", HWM_WRAPPER, "--config", str(env), "--once"],
        capture_output=True, check=False, text=True,
    )
    if process.returncode != 0 or not (root / "outgoing").iterdir():
        raise SystemExit(f"scanmail failed on the 50 MB message: {process.stderr}")
    line = next(x for x in process.stderr.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1])


HWM_WRAPPER = """
import atexit, sys
def hwm():
    with open("/proc/self/status") as status:
        sys.stderr.write(next(l for l in status if l.startswith("VmHWM:")))
atexit.register(hwm)
from scanmail.cli.scan import main
main()
"""


def one_round(root: Path, env: Path, clamd: PrivateClamd, expected: dict[str, str]) -> float:
    """The floor, then scanmail --once on the same messages, each with a fresh clamd."""
    clamd.start()
    assert clamd.process is not None
    floor_s = floor(clamd.socket, root)
    floor_cpu = cpu_seconds(clamd.process.pid)
    clamd.stop()
    print(f"floor (clamd alone, INSTREAM x2): {floor_s:.2f} s, "
          f"{len(expected) / floor_s:.1f} messages/s, clamd CPU {floor_cpu:.1f} s", flush=True)

    clamd.start()  # a fresh clamd: an empty scan cache
    assert clamd.process is not None
    before = children_cpu()
    seconds, code = scanmail_once(env)
    ours = children_cpu() - before  # scanmail and the tools it ran (7z)
    clamd_cpu = cpu_seconds(clamd.process.pid)
    clamd.stop()
    print(f"CPU: clamd {clamd_cpu:.1f} s ({clamd_cpu / floor_cpu:.2f} of the floor's), "
          f"scanmail and its tools {ours:.1f} s; {os.cpu_count()} cores", flush=True)
    wrong = [qid for qid, where in expected.items() if not (root / where / qid).exists()]
    print(f"scanmail --once: {seconds:.2f} s, {len(expected) / seconds:.1f} messages/s, "
          f"exit {code}, wrong verdicts {len(wrong)}")
    print(f"ratio to floor: {seconds / floor_s:.2f} (target <= 1.3)", flush=True)
    return seconds / floor_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=4, help="SCAN_WORKERS for scanmail")
    parser.add_argument("--raw-scan", choices=("lean", "whole"), default="lean",
                        help="RAW_SCAN for scanmail (whole: the raw message as it came)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="floor and scanmail measured this many times, interleaved "
                             "(a shared machine's noise moves one ratio by 0.3)")
    args = parser.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="scanmail-bench-"))
    root = base / "spool"
    shutil.rmtree(root, ignore_errors=True)
    create_spool(root)
    clamd = PrivateClamd(base / "clamd")
    env = root / "etc" / "scanmail.env"
    settings = (f"SPOOL_DIR={root}\nCLAMD_SOCKET={clamd.socket}\nSCAN_WORKERS={args.workers}\n"
                f"RAW_SCAN={args.raw_scan}\n")
    env.write_text(settings)
    print(f"generating {args.messages} messages in {root} ...", flush=True)
    expected = generate(root, args.messages)
    size = sum(p.stat().st_size for p in (root / "incoming").iterdir())
    print(f"spool: {len(expected)} messages, {size / 1e6:.1f} MB, "
          f"{sum(v == 'quarantine' for v in expected.values())} to be quarantined")

    pristine = base / "pristine"
    shutil.rmtree(pristine, ignore_errors=True)  # a --workdir used before
    shutil.copytree(root / "incoming", pristine)
    ratios = []
    for round_ in range(1, args.rounds + 1):
        if round_ > 1:  # the same messages again, in a new spool
            shutil.rmtree(root)
            create_spool(root)
            env.write_text(settings)
            shutil.copytree(pristine, root / "incoming", dirs_exist_ok=True)
        ratios.append(one_round(root, env, clamd, expected))
    if args.rounds > 1:
        print(f"ratios: {' '.join(f'{r:.2f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f} (target <= 1.3)")
    clamd.start()
    rss = peak_rss_50mb(base, clamd)
    clamd.stop()
    print(f"peak RSS, one message with a 50 MB attachment: {rss / 1024:.0f} MB "
          "(target < 200 MB)")
    if args.workdir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
