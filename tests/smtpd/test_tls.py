"""STARTTLS files that do not load: the error names the file that failed, and the fix.

The Debian case for real: a key in a folder 0710 root:ssl-cert, as /etc/ssl/private is,
and scanmail-smtpd run as a user outside that group, as its unit runs it (User=scanmail).
The child starts as root, imports what it needs (this venv's interpreter lives under
/root, which nobody cannot read), becomes nobody, then runs the real command line.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanmail.config import Config
from scanmail.errors import ConfigError
from scanmail.smtpd.tls import SSL_CERT_GROUP, tls_context

AS_NOBODY = """
import os, sys
import scanmail.cli.smtpd, scanmail.smtpd.tls, encodings.idna
os.setgroups([int(g) for g in sys.argv[1].split(",") if g])
os.setgid(65534)
os.setuid(65534)
sys.argv[1:2] = []
if sys.argv[1] == "--load":
    from scanmail.config import Config
    c = Config.from_mapping({"TLS_CERT": sys.argv[2], "TLS_KEY": sys.argv[3], "HOSTNAME": "gw"})
    print(type(scanmail.smtpd.tls.tls_context(c)).__name__)
else:
    scanmail.cli.smtpd.main(sys.argv[1:], prog_name="scanmail-smtpd")
"""


def as_nobody(*args: str, groups: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    """python -c AS_NOBODY: the real scanmail-smtpd (or --load CERT KEY) as nobody."""
    return subprocess.run(
        [sys.executable, "-c", AS_NOBODY, ",".join(map(str, groups)), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def make_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its unencrypted key, as PEM files."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=gw.corp.example", "-days", "2",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def config(cert: Path, key: Path) -> Config:
    return Config.from_mapping({"TLS_CERT": str(cert), "TLS_KEY": str(key),
                                "HOSTNAME": "gw.corp.example"})


def refusal(cert: Path, key: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        tls_context(config(cert, key))
    return str(caught.value)


@pytest.fixture
def debian_ssl() -> Iterator[tuple[Path, Path, Path]]:
    """cert (0644) and private/key (0640 root:ssl-cert, folder 0710), as Debian lays them out;
    in a folder under /tmp that another user can reach (pytest's tmp_path is root's alone)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the receiver as a user outside ssl-cert")
    try:
        group = grp.getgrnam(SSL_CERT_GROUP).gr_gid
    except KeyError:
        pytest.skip("no ssl-cert group (Debian's ssl-cert package)")
    top = Path(tempfile.mkdtemp(prefix="scanmail-tls-"))
    try:
        top.chmod(0o755)
        private = top / "private"
        private.mkdir(mode=0o710)
        os.chown(private, 0, group)
        cert, key = make_pair(top, "gw")
        cert.chmod(0o644)
        key = key.rename(private / key.name)
        os.chown(key, 0, group)
        key.chmod(0o640)
        env = top / "scanmail.env"
        env.write_text(f"TLS_CERT={cert}\nTLS_KEY={key}\nHOSTNAME=gw.corp.example\n"
                       f"SPOOL_DIR={top / 'spool'}\n")
        env.chmod(0o644)
        yield cert, key, env
    finally:
        shutil.rmtree(top)


def test_a_key_the_service_user_cannot_read_names_the_key_and_the_group(
    debian_ssl: tuple[Path, Path, Path],
) -> None:
    cert, key, env = debian_ssl
    done = as_nobody("--config", str(env), "--listen", "127.0.0.1:2")
    assert done.returncode == 78, done.stderr
    assert (f"TLS_KEY {key}: permission denied to user nobody: add the service user to "
            "the ssl-cert group: adduser nobody ssl-cert") in done.stderr
    assert f"{cert}:" not in done.stderr  # the certificate is not the one to blame


def test_in_the_ssl_cert_group_the_same_files_load(debian_ssl: tuple[Path, Path, Path]) -> None:
    cert, key, _ = debian_ssl
    done = as_nobody("--load", str(cert), str(key), groups=(grp.getgrnam(SSL_CERT_GROUP).gr_gid,))
    assert (done.returncode, done.stdout) == (0, "SSLContext\n"), done.stderr


def test_a_key_path_that_is_a_folder_is_named(tmp_path: Path) -> None:
    cert, _ = make_pair(tmp_path, "gw")
    assert refusal(cert, tmp_path) == f"TLS_KEY {tmp_path}: cannot read: Is a directory"


def test_a_missing_certificate_is_named(tmp_path: Path) -> None:
    _, key = make_pair(tmp_path, "gw")
    missing = tmp_path / "missing.crt"
    assert refusal(missing, key) == f"TLS_CERT {missing}: cannot read: No such file or directory"


def test_a_key_of_another_certificate_is_named_as_such(tmp_path: Path) -> None:
    cert, _ = make_pair(tmp_path, "gw")
    _, other = make_pair(tmp_path, "other")
    assert refusal(cert, other) == f"TLS_KEY {other} is not the private key of TLS_CERT {cert}"


def test_a_file_that_is_no_pem_is_named(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path, "gw")
    junk = tmp_path / "junk.pem"
    junk.write_text("not PEM at all\n")
    assert refusal(junk, key).startswith(f"TLS_CERT {junk}: not a PEM certificate")
    assert refusal(cert, junk).startswith(f"TLS_KEY {junk}: not a PEM private key")


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path, "gw")
    locked = tmp_path / "locked.key"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret",
                    "-out", str(locked)], check=True, capture_output=True)
    assert refusal(cert, locked).startswith(f"TLS_KEY {locked}: the key is encrypted")


def test_good_files_load(tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path, "gw")
    assert tls_context(config(cert, key)) is not None
