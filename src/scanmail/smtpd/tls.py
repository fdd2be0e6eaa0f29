"""The receiver's STARTTLS context: TLS_CERT and TLS_KEY loaded, each failure naming its file.

OpenSSL's errors name no file ("[Errno 13] Permission denied", "PEM lib"), and the old
message named the certificate whatever failed. On Debian the key is the one that fails:
/etc/ssl/private is 0710 root:ssl-cert, so a service user outside that group cannot read
it. Each file is opened first, as the user the receiver runs as, so the message can say
which file, why, and the fix (adduser scanmail ssl-cert).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import ssl
from pathlib import Path

from scanmail.config import Config
from scanmail.errors import ConfigError

SSL_CERT_GROUP = "ssl-cert"  # Debian's group for reading /etc/ssl/private (package ssl-cert)


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The STARTTLS context when TLS_CERT and TLS_KEY are set; ConfigError if they are bad."""
    cert, key = config.tls_cert, config.tls_key
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("TLS_CERT and TLS_KEY must be set together")
    check_readable("TLS_CERT", cert)
    check_readable("TLS_KEY", key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted:
        raise ConfigError(f"TLS_KEY {key}: the key is encrypted; a daemon has no one to ask "
                          f"for its passphrase (write it unencrypted: openssl pkey -in "
                          f"{key} -out NEW)") from None
    except ssl.SSLError as exc:
        raise ConfigError(_which_is_bad(cert, key, exc)) from None
    except OSError as exc:
        raise ConfigError(f"TLS_CERT/TLS_KEY: cannot load {cert} and {key}: "
                          f"{exc.strerror or exc}") from None
    return context


def check_readable(setting: str, path: str) -> None:
    """ConfigError naming the setting and the file if this process cannot read it."""
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        raise ConfigError(f"{setting} {path}: permission denied to user {_user()}: "
                          f"{_fix(Path(path))}") from None
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: cannot read: {exc.strerror or exc}") from None


def _fix(path: Path) -> str:
    """How to let the service user read path: Debian's ssl-cert group where it applies."""
    user = _user()
    for place in (path, *path.absolute().parents):
        with contextlib.suppress(OSError, KeyError):
            if grp.getgrgid(place.stat().st_gid).gr_name == SSL_CERT_GROUP:
                return (f"add the service user to the {SSL_CERT_GROUP} group: "
                        f"adduser {user} {SSL_CERT_GROUP} (then restart scanmail-smtpd)")
    return f"make it readable by {user} (and its folders searchable)"


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class _Encrypted(Exception):
    """The key asks for a passphrase: OpenSSL would prompt on the terminal, or hang."""


def _no_passphrase() -> bytes:
    raise _Encrypted


def _which_is_bad(cert: str, key: str, exc: ssl.SSLError) -> str:
    """Which of the two files OpenSSL refused: the certificate, the key, or the pair."""
    if "KEY_VALUES_MISMATCH" in str(exc):
        return f"TLS_KEY {key} is not the private key of TLS_CERT {cert}"
    try:
        ssl.create_default_context().load_verify_locations(cafile=cert)
    except ssl.SSLError:
        return f"TLS_CERT {cert}: not a PEM certificate ({exc.reason or exc})"
    return f"TLS_KEY {key}: not a PEM private key ({exc.reason or exc})"
