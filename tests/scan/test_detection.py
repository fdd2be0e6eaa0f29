"""Every file of Debian's clamav-testfiles, in every encoding a mail can carry, is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.events import rows
from helpers.mail import enqueue, folder_of, message, nested, raw_message
from scanmail.config import load_config
from scanmail.scan.runner import run
from scanmail.testing import sample_files

FILES = sample_files()


def variants(path: Path) -> dict[str, bytes]:
    """One sample file carried in each way the issue lists."""
    data = path.read_bytes()
    return {
        "doc-name": message("doc", attachments=[("report.doc", data)]),
        "innocent-name": message("txt", attachments=[("notes.txt", data)]),
        "no-name": message("none", attachments=[(None, data)]),
        "quoted-printable": raw_message(
            'Content-Type: application/octet-stream; name="notes.txt"', data, "quoted-printable"
        ),
        "qp-no-name": raw_message("Content-Type: application/octet-stream", data,
                                  "quoted-printable"),
        "nested-rfc822": nested(message("inner", attachments=[("notes.txt", data)])),
        "nested-twice-qp": nested(nested(raw_message(
            "Content-Type: application/octet-stream", data, "quoted-printable"))),
    }


def test_testfiles_package_is_complete():
    assert len(FILES) >= 40  # clamav-testfiles ships 44 samples


def test_every_testfile_in_every_encoding_is_quarantined_as_infected(
    spool_root, write_env, clamd_server
):
    (spool_root / "etc" / "matches.doc").write_text("filename=.*\\.doc$\n")
    (spool_root / "etc" / "matches.bad").write_text("")  # prove the scanner, not the names
    config = load_config(write_env())
    queued = {}
    for sample in FILES:
        for how, data in variants(sample).items():
            queued[enqueue(spool_root, data).name] = (sample.name, how)
    summary = run(config)
    assert summary.left == 0
    missed = [queued[qid] for qid in queued if folder_of(spool_root, qid) != ["quarantine"]]
    assert missed == []
    scans = {row["qid"]: f"{row['reason']}:{row['viruses']}" for row in rows(spool_root, "scan")}
    unnamed = [queued[qid] for qid, what in scans.items()
               if not what.startswith("infected:") or what == "infected:"]
    assert unnamed == []
    assert len(scans) == len(FILES) * 7


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_eicar_under_matches_doc_name_is_decoded_and_scanned(
    spool_root, write_env, clamd_server, encoding
):
    from scanmail.testing import eicar

    data = raw_message('Content-Type: application/msword; name="letter.doc"', eicar(), encoding)
    path = enqueue(spool_root, data)
    run(load_config(write_env(SCAN_POLICY="suspect")))
    assert folder_of(spool_root, path.name) == ["quarantine"]
