"""What clamd is spared: the well-formed base64 bodies of binary parts (Explosion.cuts).

Such a body is decoded exactly into a part that is scanned beside the raw message, so the
raw message goes to the scanner without it: clamd neither decodes it a second time nor
matches its base64 text. Everything else (text parts, small bodies, odd ones, any message
read with a defect) stays in.
"""

from __future__ import annotations

import base64
import io
import random
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from helpers.cli import run_scanmail
from helpers.events import rows
from helpers.mail import enqueue, folder_of, message, raw_message
from scanmail import mime
from scanmail.config import Config, load_config
from scanmail.mime import cuts as cut_rules
from scanmail.mime.body import FLUSH, Body
from scanmail.pieces import pieces
from scanmail.scan.scanner import ClamdScanner, CommandScanner, Target
from scanmail.testing import TESTFILES, eicar


def explode(data: bytes, workdir: Path) -> mime.Explosion:
    workdir.mkdir()
    source = workdir.parent / f"{workdir.name}.eml"
    source.write_bytes(data)
    with open(source, "rb") as handle:
        return mime.explode(handle, workdir, mime.Limits())


@pytest.mark.parametrize(("cuts", "expected"), [
    ((), [(5, 95)]),
    (((10, 20),), [(5, 10), (25, 75)]),
    (((0, 10), (80, 95)), [(15, 70)]),  # the cuts at either end: what lies between
    (((30, 40), (10, 20), (15, 35)), [(5, 10), (45, 55)]),  # unsorted and overlapping
    (((10, 500),), [(5, 10)]),  # past the end
    (((0, 95),), []),
])
def test_pieces_are_what_lies_outside_the_cuts(cuts, expected) -> None:
    assert pieces(5, 100, cuts) == expected


def test_a_large_well_formed_attachment_is_cut_but_for_its_first_line(tmp_path: Path
                                                                      ) -> None:
    payload = random.Random(1).randbytes(100_000)
    data = message("big", attachments=[("figures.bin", payload)])
    explosion = explode(data, tmp_path / "w")
    [(start, end)] = explosion.cuts
    [attachment] = [p for p in explosion.parts if p.names == ["figures.bin"]]
    assert attachment.path is not None and attachment.path.read_bytes() == payload
    body = data.index(b"\r\n\r\n", data.index(b"figures.bin")) + 4
    first_line = data[body:start]
    assert first_line.endswith(b"\r\n") and first_line.count(b"\n") == 1
    assert base64.b64decode(first_line + data[start:end]) == payload  # the body, only it
    assert data[end:].startswith(b"--")


@pytest.mark.parametrize("case", ["text", "text-misspelt", "small", "ragged", "defect",
                                  "lying-padding", "junk-line", "blank-header-line",
                                  "lone-cr-separator", "boundary-tab", "nul-line",
                                  "long-header-line", "uuencode-begin", "boundary-semicolon",
                                  "boundary-in-a-parameter"])
def test_nothing_is_cut_from_text_small_odd_or_defective_bodies(case: str, tmp_path: Path
                                                                ) -> None:
    payload = random.Random(2).randbytes(60_000)
    headers = 'Content-Type: application/octet-stream; name="a.bin"'
    if case == "text":
        data = raw_message("Content-Type: text/html", b"<p>" + payload.hex().encode())
    elif case == "text-misspelt":  # clamd's mail parser takes it for text (phishing checks)
        data = raw_message("Content-Type: texts/html", b"<p>" + payload.hex().encode())
    elif case == "lone-cr-separator":  # a line end here and to clients; to clamd?
        good = raw_message(headers, payload)
        data = good.replace(b"base64\r\n\r\n", b"base64\r\n\r")
    elif case == "boundary-tab":  # a boundary here (and to Python), not to ClamAV
        data = raw_message(headers, payload).replace(b"\r\n--b0\r\n", b"\r\n--b0\t\r\n")
    elif case == "nul-line":  # ClamAV drops the NUL: a whitespace-only line, headers' end
        data = raw_message(headers + "\r\n \0", payload)
    elif case == "long-header-line":  # ClamAV splits it: an empty line, headers' end
        data = raw_message(headers + "\r\nX-Long: " + "x" * 991, payload)
    elif case == "uuencode-begin":  # ClamAV uudecodes the lines after it, boundaries too
        data = raw_message(headers, payload).replace(
            b"see attached\r\n", b"see attached\r\nbegin 644 x\r\n")
    elif case in ("boundary-semicolon", "boundary-in-a-parameter"):  # ClamAV's b0, not ours
        param = ('boundary="b0;x"' if case == "boundary-semicolon"
                 else 'charset="x;boundary=b0"; boundary=b1')
        data = raw_message(headers, payload).replace(b"--b0", b"--b0;x" if "semi" in case
                                                     else b"--b1")
        data = data.replace(b'boundary="b0"', param.encode())
    elif case == "blank-header-line":  # the headers' end to clamd, a continuation here
        data = raw_message(headers + "\r\n ", payload)
    elif case == "small":
        data = raw_message(headers, payload[: cut_rules.CUT_MIN // 2])
    elif case == "ragged":  # lines of whole quads, but not all alike: another encoder
        body = base64.b64encode(payload)
        lines = [body[i : i + 76] for i in range(0, 20_000, 76)]
        lines += [body[i : i + 64] for i in range(20_064, len(body), 64)]
        good = raw_message(headers, payload)
        head, _, _ = good.partition(b"base64\r\n\r\n")
        data = head + b"base64\r\n\r\n" + b"\r\n".join(lines) + b"\r\n--b0--\r\n"
    elif case == "defect":  # no close delimiter: clamd may read it otherwise
        data = raw_message(headers, payload).replace(b"--b0--", b"")
    elif case == "junk-line":  # what another reader might take for structure
        good = raw_message(headers, payload)
        cut = good.index(b"\r\n", good.index(b"base64\r\n\r\n") + 20_000)
        data = good[:cut] + b"\r\n--other\r\nContent-Type: text/plain" + good[cut:]
    else:  # padding inside the data: every client decodes it its own way
        body = base64.encodebytes(payload[:30_001]) + base64.encodebytes(payload[30_001:])
        data = raw_message(headers, b"").replace(
            b"base64\r\n\r\n", b"base64\r\n\r\n" + body.replace(b"\n", b"\r\n"))
    explosion = explode(data, tmp_path / "w")
    assert any(p.size >= len(payload) // 8 for p in explosion.parts)  # it was decoded
    assert explosion.cuts == []


def enveloped(tmp_path: Path) -> tuple[Target, Target]:
    """EICAR between two fillers after an envelope: whole, and with the fillers cut."""
    header = b"FROM <a@x>\nRCPT <b@x>\nBODY\n"
    filler = b"x" * 5000
    path = tmp_path / "q1"
    path.write_bytes(header + filler + eicar() + filler)
    cuts = ((0, len(filler)), (len(filler) + len(eicar()), 2 * len(filler) + len(eicar())))
    return Target(path, len(header)), Target(path, len(header), cuts)


@pytest.mark.parametrize("handover", [True, False], ids=["fildes", "instream"])
def test_clamd_scans_the_raw_message_less_its_cuts(
    write_env, tmp_path: Path, handover: bool
) -> None:
    # The test database holds EICAR's hash: only the exact bytes match.
    scanner = ClamdScanner(load_config(write_env()))
    scanner.client.fildes = handover
    whole, cut = enveloped(tmp_path)
    assert scanner.scan_target(whole) is None
    found = scanner.scan_target(cut)
    assert found is not None and found.startswith("Eicar-Test-Signature")


def test_a_command_scanner_gets_the_raw_message_less_its_cuts(write_env, tmp_path: Path
                                                             ) -> None:
    seen = tmp_path / "seen.eml"
    judge = tmp_path / "judge.sh"
    judge.write_text(f'#!/bin/sh\ncp "$1/raw-message.eml" {seen}\nexit 0\n')
    judge.chmod(0o755)
    config: Config = load_config(write_env(SCANNER="command", SCANNER_COMMAND=f"{judge} {{}}"))
    work = tmp_path / "work"
    work.mkdir()
    _, cut = enveloped(tmp_path)
    CommandScanner(config).scan(cut, [], work)
    assert seen.read_bytes() == eicar()


def test_a_virus_in_a_cut_attachment_is_found_in_its_decoded_part(
    spool_root: Path, write_env, tmp_path: Path
) -> None:
    """The whole pass: a zip holding clam.exe, large enough that its body is cut."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("figures.bin", random.Random(3).randbytes(80_000))
        zf.writestr("docs/notes.txt", (TESTFILES / "clam.exe").read_bytes())
    data = message("quarterly", attachments=[("figures.zip", archive.getvalue())])
    assert explode(data, tmp_path / "w").cuts  # else this would test the raw scan
    path = enqueue(spool_root, data)
    code, _ = run_scanmail(write_env(), "--once")
    assert code == 0
    assert folder_of(spool_root, path.name) == ["quarantine"]
    [row] = rows(spool_root)
    assert row["reason"] == "infected" and row["viruses"].startswith("clam.exe")


@pytest.mark.parametrize(("raw", "cuts", "alike"), [
    (b"ab\r\ncd\r\n", (), True),
    (b"abcd\r\nef", (), True),  # chunks of whole lines: the CR's LF comes with it
    (b"ab\rcd", (), False),  # a lone CR
    (b"abcdefg\r", (), False),  # at the very end
    (b"ab\rcd\r\n", ((0, 4),), True),  # inside a cut
    (b"ab\r\ncd\rx", ((0, 4),), False),
    (b"ab\x00\r\n", (), False),  # a NUL, which ClamAV drops
    (b"--b0 \r\n", (), True),  # trailing spaces: ClamAV trims them too
    (b"x\n--b0\t\r\n", (), False),  # a tab: a boundary here, not to ClamAV
    (b"--b0\x0c\r\n", (), False),
    (b"x" * 998 + b"\n", (), True),
    (b"x" * 999 + b"\n", (), False),  # ClamAV splits it
    (b"a\nbegin 644 x\n", (), False),  # uudecoded by ClamAV, whatever follows
    (b"a\nbegin with\n", (), True),
    (b"a =ybegin line=128\n", (), False),
    (b"(This file must be converted with BinHex 4.0)\n", (), False),
])
def test_what_clamav_reads_otherwise_is_found_outside_the_cuts(monkeypatch, raw, cuts, alike
                                                              ) -> None:
    # chunks as small as the longest line allows: lines run up to a chunk's end
    monkeypatch.setattr(cut_rules, "READ_CHUNK", max(len(line) + 1 for line in raw.split(b"\n")))
    read = lambda start, end: raw[start:end]  # noqa: E731
    assert cut_rules.read_alike_outside(read, len(raw), cuts) is alike


def test_a_body_is_exact_only_if_its_lines_go_on_alike_across_flushes(tmp_path: Path) -> None:
    """Checked within each flush by _even_lines, and across them: a blank line where one
    flush ends, another width after it, a short line ending a flush."""
    line = base64.b64encode(b"\0" * 57) + b"\r\n"  # 76 characters
    block = line * (FLUSH // len(line) + 1)

    def exact(*feeds: bytes) -> bool:
        body = Body(tmp_path / f"b{len(list(tmp_path.iterdir()))}", "base64", lambda n: None)
        for data in feeds:
            body.feed(data)
        body.close()
        return body.exact

    assert exact(block, line * 10)
    assert not exact(block, b"\r\n" + line * 10)
    assert not exact(block, base64.b64encode(b"\0" * 48) + b"\r\n")  # 64 after 76
    assert not exact(block[:-len(line)] + line[:8] + b"\r\n", line * 10)


@pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan missing")
def test_clamav_still_sees_mail_text_and_attachment_names_in_the_cut_message(
    tmp_path: Path
) -> None:
    """ClamAV's own engine (clamscan) on the raw message less its cuts: the phishing check
    of an HTML part and a container signature on an attachment's name in the mail still
    fire, because text parts stay whole and a cut body keeps its first line."""
    db = tmp_path / "db"
    db.mkdir()
    (db / "mail.cdb").write_text("Test.MailAttachmentName:CL_TYPE_MAIL:*:evil\\.js:*:*:*:*:*:*\n")
    (db / "phish.pdb").write_text("H:www.paypal.com\n")
    html = (b'<html><body><a href="http://evil.example/login">https://www.paypal.com/</a>'
            b"</body></html><!--" + b"x" * 20_000 + b"-->")
    data = raw_message("Content-Type: text/html", html).replace(
        b"--b0--\r\n",
        b'--b0\r\nContent-Type: application/octet-stream; name="evil.js"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(random.Random(4).randbytes(30_000)).replace(b"\n", b"\r\n")
        + b"--b0--\r\n")
    explosion = explode(data, tmp_path / "w")
    assert len(explosion.cuts) == 1  # the attachment's body; not the HTML part's
    cut = tmp_path / "cut.eml"
    cut.write_bytes(b"".join(data[a : a + n] for a, n in pieces(0, len(data), explosion.cuts)))
    assert cut.stat().st_size < len(data) // 2
    done = subprocess.run(["clamscan", "--no-summary", "--allmatch", f"--database={db}",
                           str(cut)], capture_output=True, text=True, timeout=120, check=False)
    assert "Heuristics.Phishing.Email.SSL-Spoof" in done.stdout
    assert "Test.MailAttachmentName" in done.stdout


@pytest.mark.parametrize("raw_scan", ["lean", "whole"])
def test_raw_scan_whole_gives_the_scanner_the_message_as_it_came(
    spool_root: Path, write_env, tmp_path: Path, raw_scan: str
) -> None:
    seen = tmp_path / "seen.eml"
    judge = tmp_path / "judge.sh"
    judge.write_text(f'#!/bin/sh\ncp "$1/raw-message.eml" {seen}\nexit 0\n')
    judge.chmod(0o755)
    data = message("big", attachments=[("figures.bin", random.Random(5).randbytes(60_000))])
    path = enqueue(spool_root, data)
    code, _ = run_scanmail(write_env(SCANNER="command", SCANNER_COMMAND=f"{judge} {{}}",
                                     RAW_SCAN=raw_scan), "--once")
    assert code == 0 and folder_of(spool_root, path.name) == ["outgoing"]
    if raw_scan == "whole":
        assert seen.read_bytes() == data
    else:
        assert len(seen.read_bytes()) < len(data) // 2
