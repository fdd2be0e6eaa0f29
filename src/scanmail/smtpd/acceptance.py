"""Receiving policy: which envelope addresses, recipient domains and clients are accepted."""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401 - loaded now: after --user the library may be unreadable
import ipaddress
import re
from dataclasses import dataclass

from scanmail.config import Config, Network

MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: a path is at most 256 octets with its brackets
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f<>]")  # CR, LF, NUL and brackets break the spool format


@dataclass(frozen=True)
class Policy:
    """What the receiver accepts: local domains, trusted networks, limits."""

    hostname: str
    local_domains: frozenset[str]
    relay_networks: tuple[Network, ...]
    max_recipients: int
    max_message_size: int
    max_hops: int = 30

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        return cls(
            hostname=config.hostname,
            local_domains=config.local_domains,
            relay_networks=config.relay_networks,
            max_recipients=config.max_recipients,
            max_message_size=config.max_message_size,
            max_hops=config.max_hops,
        )

    def is_trusted(self, peer: object) -> bool:
        """The client is in RELAY_NETWORKS (IPv4-mapped IPv6 counts as IPv4)."""
        ip = peer_ip(peer)
        if ip is None:
            return False
        return any(ip in network for network in self.relay_networks)

    def is_local(self, address: str) -> bool:
        """The recipient's domain is one of LOCAL_DOMAINS (a leading dot also covers subdomains)."""
        domain = address.rpartition("@")[2].lower().rstrip(".")
        forms = {domain}
        with contextlib.suppress(UnicodeError):
            forms.add(domain.encode("idna").decode("ascii"))
        for local in self.local_domains:
            if local in forms:
                return True
            if local.startswith(".") and any(form.endswith(local) for form in forms):
                return True
        return False


def peer_ip(peer: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP address from asyncio's peername, or None.

    On the dual-stack [::] socket an IPv4 client shows as ::ffff:a.b.c.d: it is the IPv4
    address, for RELAY_NETWORKS, the per-client limit, Received: and the logs alike.
    """
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        ip = ipaddress.ip_address(str(peer[0]).partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_address(address: str, smtputf8: bool, sender: bool) -> str | None:
    """Why an envelope address cannot be accepted (an SMTP reply), or None if it can."""
    if len(address.encode("utf-8", "surrogateescape")) > MAX_ADDRESS:
        return "553 5.1.3 Address too long"
    if _FORBIDDEN.search(address):
        return "553 5.1.3 Address contains forbidden characters"
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return "553 5.6.7 Address is not valid UTF-8"
    if not address.isascii() and not smtputf8:
        return "553 5.6.7 Non-ASCII address requires SMTPUTF8"
    local, at, domain = address.rpartition("@")
    if not at and not (not sender and address.lower() == "postmaster"):
        return "553 5.1.3 Address must have a domain"
    if at and (not local or not domain):
        return "553 5.1.3 Malformed address"
    return None
