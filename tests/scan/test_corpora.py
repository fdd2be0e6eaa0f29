"""The shared corpora of real and hostile mail through the real pass and a real clamd."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.corpora import CORPORA
from helpers.events import rows as event_rows
from helpers.mail import enqueue, folder_of
from scanmail.config import load_config
from scanmail.scan.runner import run

NOXXI = CORPORA / "noxxi-mime-is-broken"
pytestmark = pytest.mark.skipif(not NOXXI.is_dir(), reason=f"corpora not found at {CORPORA}")

# The four BinHex samples of hide-content carry "ARRAY(0x55a6425d0650)", a Perl reference
# the generator wrote by mistake, not eicar.zip: there is nothing in them to find.
NO_PAYLOAD = ("binhex",)


def noxxi_rows(kind: str) -> list[tuple[str, str, int, str]]:
    rows = []
    for line in (NOXXI / "expected-detail.tsv").read_text().splitlines():
        if line.startswith("#") or not line.startswith(kind):
            continue
        rel, test_id, validity, intended, *_ = line.split("\t")
        rows.append((rel, test_id, int(validity), intended))
    return rows


def verdicts(root: Path) -> dict[str, tuple[str, str]]:
    return {row["qid"]: (row["reason"], row["viruses"]) for row in event_rows(root, "scan")}


def test_noxxi_hidden_content_is_blocked(spool_root, write_env, clamd_server, capsys):
    (spool_root / "etc" / "matches.doc").write_text("filename=.*\\.zip$\n")
    (spool_root / "etc" / "matches.bad").write_text("")  # content only: no name bans
    queued = {enqueue(spool_root, (NOXXI / rel).read_bytes()).name: (rel, tid, validity)
              for rel, tid, validity, _ in noxxi_rows("hide-content")}
    summary = run(load_config(write_env(SCAN_POLICY="all")))
    assert summary.left == 0
    missed = [v for qid, v in queued.items() if folder_of(spool_root, qid) != ["quarantine"]]
    carrying = [v for v in queued.values() if not any(k in v[1] for k in NO_PAYLOAD)]
    missed_carrying = [v for v in missed if v in carrying]
    with capsys.disabled():
        print(f"\nnoxxi hide-content: blocked {len(queued) - len(missed)}/{len(queued)}; "
              f"of those carrying eicar.zip {len(carrying) - len(missed_carrying)}/"
              f"{len(carrying)}; missed {sorted(t for _, t, _ in missed)}")
    assert [v for v in missed if v[2] >= 2] == []  # nothing valid or edge-valid slips
    assert len(missed) <= len(queued) * 0.05
    assert len(missed_carrying) <= 2


def test_noxxi_hidden_zip_names_are_banned(spool_root, write_env, clamd_server, capsys):
    (spool_root / "etc" / "matches.bad").write_text("filename=.*\\.zip$\n")
    rows = noxxi_rows("hide-filename")
    queued = {enqueue(spool_root, (NOXXI / rel).read_bytes()).name: (rel, tid, intended)
              for rel, tid, _, intended in rows}
    run(load_config(write_env()))
    hiding = {qid: v for qid, v in queued.items() if ".zip" in v[2]}
    controls = {qid: v for qid, v in queued.items() if ".zip" not in v[2]}
    missed = [v for qid, v in hiding.items() if folder_of(spool_root, qid) != ["quarantine"]]
    with capsys.disabled():
        print(f"\nnoxxi hide-filename: banned {len(hiding) - len(missed)}/{len(hiding)}")
    assert missed == []
    assert controls and all(folder_of(spool_root, q) == ["outgoing"] for q in controls)


HAM = ("hunnysoft-mime-samples", "ruby-mail-fixtures")
NOT_MESSAGES = {".tsv", ".xml", ".md", ".list", ".png", ".wav", ".jpg", ".gif", ".pdf",
                ".bin", ".doc"}


def corpus_messages() -> list[Path]:
    found = []
    for folder in sorted(p for p in CORPORA.iterdir() if p.is_dir() and p != NOXXI):
        for path in sorted(folder.rglob("*")):
            if (path.is_file() and path.suffix not in NOT_MESSAGES
                    and path.name not in ("SOURCE.txt", "README.md")
                    and "_decoded" not in path.name and "files" not in path.parts):
                found.append(path)
    return found


def test_every_other_corpus_message_gets_a_verdict(spool_root, write_env, clamd_server, capsys):
    queued = {enqueue(spool_root, path.read_bytes()).name: path for path in corpus_messages()}
    assert len(queued) > 400
    summary = run(load_config(write_env()))
    assert summary.left == 0 and summary.seen == len(queued)
    for qid in queued:
        assert len(folder_of(spool_root, qid)) == 1
    assert sorted(p.name for p in (spool_root / "incoming").iterdir()) == []
    assert sorted(p.name for p in (spool_root / "tmp").iterdir()) == []
    outside = {p.name for p in spool_root.parent.iterdir()} - {"spool"}
    assert outside == set()  # nothing written beside the spool
    blocked = {qid: v for qid, v in verdicts(spool_root).items() if v[0] != "clean"}
    ham_blocked = [(str(queued[q].relative_to(CORPORA)), v) for q, v in blocked.items()
                   if queued[q].relative_to(CORPORA).parts[0] in HAM]
    with capsys.disabled():
        print(f"\nother corpora: {len(queued)} messages, {len(blocked)} blocked: "
              + ", ".join(f"{queued[q].name}={v[0]}" for q, v in sorted(blocked.items())))
        print(f"ham false positives: {len(ham_blocked)}")
    assert ham_blocked == []
