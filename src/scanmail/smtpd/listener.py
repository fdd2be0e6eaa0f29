"""The receiver's listening socket: the default [::]:25 takes IPv4 and IPv6 alike.

An MX published with an AAAA record gets mail over IPv6, and the old default
(0.0.0.0:25) refused it. asyncio's create_server sets IPV6_V6ONLY on every IPv6 socket
(so it can bind both families separately), so the wildcard "::" is bound here, by hand,
with IPV6_V6ONLY off: one socket, IPv4 clients seen as ::ffff:a.b.c.d (acceptance.peer_ip
turns those back into IPv4, for RELAY_NETWORKS and the logs). A host without IPv6 (a
kernel booted with ipv6.disable=1, a unit with RestrictAddressFamilies= lacking AF_INET6)
cannot make that socket: the receiver says so in one log line and takes 0.0.0.0.
"""

from __future__ import annotations

import errno
import logging
import socket

log = logging.getLogger(__name__)

ANY_IPV6 = "::"
ANY_IPV4 = "0.0.0.0"
BACKLOG = 100
# socket() or bind() errors that mean "this host has no IPv6", not "the port is taken"
_NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.EADDRNOTAVAIL})


def shown(host: str, port: int) -> str:
    """host:port as people write it: [::1]:25 for IPv6."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_dual_stack(host: str) -> bool:
    """The wildcard IPv6 address, which this module binds for both families."""
    return host == ANY_IPV6


def _bound(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def dual_stack(port: int) -> tuple[socket.socket, str]:
    """A socket listening on [::]:port for IPv4 and IPv6, or on 0.0.0.0:port without IPv6.

    Returns the socket and where it listens, for the log; a busy port or a privileged
    one raises OSError as bind() does.
    """
    try:
        return _bound(socket.AF_INET6, ANY_IPV6, port), f"{shown(ANY_IPV6, port)} (IPv4 and IPv6)"
    except OSError as exc:
        if exc.errno not in _NO_IPV6:
            raise
        log.warning("no IPv6 on this host (%s): listening on %s:%d, IPv4 only",
                    exc.strerror, ANY_IPV4, port)
    return _bound(socket.AF_INET, ANY_IPV4, port), f"{ANY_IPV4}:{port} (IPv4 only)"
