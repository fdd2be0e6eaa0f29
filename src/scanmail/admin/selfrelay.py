"""Is the forwarder's relay the receiver itself? (issue 12: a mail loop by configuration)

With the defaults of old (LISTEN=0.0.0.0:25, RELAY_HOST=localhost, RELAY_PORT=25) the
gateway relays to itself and every message goes round until MAX_HOPS stops it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

from scanmail.config import Config

_ANY = {"", "0.0.0.0", "::", "*"}


def _addresses(host: str, port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    with contextlib.suppress(OSError, UnicodeError):
        for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP):
            with contextlib.suppress(ValueError):
                ip = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                found.add(ip)
    return found


def _is_own(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A loopback address, or one this host can bind (so it is one of its own)."""
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


def relay_to_self(config: Config) -> str | None:
    """A warning when RELAY_HOST:RELAY_PORT is the receiver's own LISTEN, else None."""
    if config.fwd_sendmail:
        return None
    host, port = config.listen
    if port != config.relay_port:
        return None
    relay = _addresses(config.relay_host, config.relay_port)
    if host in _ANY:
        looped = any(_is_own(ip) for ip in relay)
    else:
        looped = bool(relay & _addresses(host, port))
    if not looped:
        return None
    where = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    return (f"RELAY_HOST:RELAY_PORT ({config.relay_host}:{config.relay_port}) is this "
            f"receiver's own LISTEN ({where}): mail would loop until MAX_HOPS; "
            "point RELAY_HOST/RELAY_PORT at the internal server")
