"""The demo: a spool with a handful of messages, a private clamd, one `scanmail --once`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from scanmail.admin.init import create_spool
from scanmail.spool import Envelope, Spool, read_spool_file
from scanmail.testing import TESTFILES, PrivateClamd, eicar


def mail(subject: str, attachment: tuple[str, bytes] | None = None) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "friend@outside.example"
    msg["To"] = "alice@corp.example"
    msg["Subject"] = subject
    msg.set_content(f"{subject}\n\nRegards,\nA friend\n")
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream",
                           filename=attachment[0])
    return msg.as_bytes()


SAMPLES = [
    ("clean: a plain note", None),
    ("clean: the quarterly figures", ("figures.csv", b"quarter,revenue\nQ1,100\nQ2,120\n")),
    ("banned: a screensaver", ("funny.scr", b"MZ not really a program")),
    ("banned: a double extension", ("invoice.pdf.exe", b"MZ not really a program")),
    ("infected: EICAR test file", ("readme.txt", eicar())),
    ("infected: a Word macro sample", ("report.doc", (TESTFILES / "clam.ole.doc").read_bytes())),
    ("infected: a PDF sample", ("scan.pdf", (TESTFILES / "clam.pdf").read_bytes())),
    ("banned: an .exe inside a zip", ("photos.zip", (TESTFILES / "clam.zip").read_bytes())),
]


def main() -> None:
    base = Path(sys.argv[1] if len(sys.argv) > 1 else "demo").resolve()
    shutil.rmtree(base, ignore_errors=True)
    root = base / "spool"
    create_spool(root)
    spool = Spool(root)
    subjects = {}
    for subject, attachment in SAMPLES:
        path = spool.write("incoming", Envelope("friend@outside.example",
                                                ("alice@corp.example",)),
                           [mail(subject, attachment)])
        subjects[path.name] = subject
    print(f"demo spool: {root} ({len(SAMPLES)} messages in incoming)")
    with PrivateClamd(base / "clamd") as clamd:
        print(f"private clamd: {clamd.socket} (signatures: sigtool --md5 of clamav-testfiles"
              " + EICAR)")
        env = root / "etc" / "scanmail.env"
        env.write_text(f"SPOOL_DIR={root}\nCLAMD_SOCKET={clamd.socket}\n"
                       "ADMIN_EMAIL=postmaster@corp.example\n")
        scanmail = Path(sys.executable).with_name("scanmail")
        print(f"$ {scanmail} --config {env} --once --verbose\n", flush=True)
        done = subprocess.run([str(scanmail), "--config", str(env), "--once", "--verbose"],
                              check=False)
    print(f"\nscanmail exited {done.returncode}. Where each message went:")
    for qid, subject in subjects.items():
        folder = next(f for f in ("outgoing", "quarantine", "incoming", "failed")
                      if (root / f / qid).exists())
        print(f"  {folder:<11} {qid}  {subject}")
    alerts = [p for p in (root / "outgoing").iterdir() if p.name not in subjects]
    if alerts:
        admin = read_spool_file(alerts[0]).envelope.recipients[0]
        print(f"  {'outgoing':<11} {len(alerts)} alerts for {admin}")
    print(f"\nLook around: ls {root}/*; cat {root}/quarantine/*.d/record")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
