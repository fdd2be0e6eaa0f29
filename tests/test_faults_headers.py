"""Issue 14, item 8: header parsing is linear, so crafted headers cannot hold the queue.

Folded header values were built by repeated concatenation, quadratic in the number of
continuation lines: four parts of ~1 MB folded headers (3.9 MB) took minutes. Timed in a
child process as a ratio against an ordinary message of the same size in the same run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.mail import RCPT, SENDER

TIMER = """
import json, sys, tempfile, time
from pathlib import Path
from scanmail import mime
times = {}
for name in sys.argv[1:]:
    with tempfile.TemporaryDirectory() as work, open(name, "rb") as handle:
        started = time.perf_counter()
        mime.Walker(Path(work), mime.Limits()).walk(handle)
        times[name] = time.perf_counter() - started
print(json.dumps(times))
"""


def folded(parts: int = 4, lines: int = 240_000) -> bytes:
    """parts parts whose Content-Disposition is folded over `lines` continuation lines."""
    part = ('--b0\r\nContent-Disposition: attachment; filename="a.txt"' + "\r\n x" * lines
            + "\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
    return (f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: folded\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + part * parts
            + "--b0--\r\n").encode()


def ordinary(size: int) -> bytes:
    """A plain text message of about size bytes, in short lines."""
    line = b"an ordinary line of text, about as short as the folded ones\r\n"
    head = f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: plain\r\n\r\n".encode()
    return head + line * (size // len(line))


def test_folded_headers_cost_linear_time(tmp_path: Path):
    crafted = folded()
    assert 3_800_000 < len(crafted) < 4_000_000
    paths = {
        "crafted": tmp_path / "crafted.eml",  # 3.9 MB: 4 headers of 240,000 folded lines
        "half": tmp_path / "half.eml",  # the same with headers half as long
        "ordinary": tmp_path / "ordinary.eml",  # 3.9 MB of plain text
    }
    paths["crafted"].write_bytes(crafted)
    paths["half"].write_bytes(folded(lines=120_000))
    paths["ordinary"].write_bytes(ordinary(len(crafted)))
    done = subprocess.run([sys.executable, "-c", TIMER, *map(str, paths.values())],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    seconds = json.loads(done.stdout)
    times = {key: seconds[str(path)] for key, path in paths.items()}
    # Linear: headers twice as long take about twice as long (quadratic: four times).
    assert times["crafted"] / times["half"] < 3, times
    # Read line by line, 4-byte header lines cost more than an ordinary message's body
    # of the same size (about 150 times here); quadratic folding made it thousands.
    assert times["crafted"] / times["ordinary"] < 600, times
