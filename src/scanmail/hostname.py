"""The gateway's own name (HOSTNAME's default): its greeting, HELO, Received: and alerts.

socket.getfqdn() takes the first name /etc/hosts gives the host's address, and on many
Debian machines that is "localhost": "127.0.0.1 localhost vm" makes getfqdn() say
localhost, and "127.0.0.1 localhost.localdomain localhost vm" localhost.localdomain.
A gateway that greets and signs Received: as localhost confuses every log it appears in,
and a HELO of localhost is refused by many servers. So the default is getfqdn's own
choice (a name with a dot among the host's names) made without the loopback names,
falling back to socket.gethostname(); `scanmail check` and `status` warn (warning())
when the name in use is still a loopback name or has no domain.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable

# Debian's /etc/hosts names for 127.0.0.1 and ::1; "localhost*" covers localhost6 too.
_LOOPBACK_NAMES = frozenset({"ip6-localhost", "ip6-loopback"})


def is_loopback_name(name: str) -> bool:
    """localhost, localhost.localdomain, localhost6..., ip6-localhost: a name for loopback."""
    low = name.lower().rstrip(".")
    return low.startswith("localhost") or low in _LOOPBACK_NAMES


def choose(names: Iterable[str]) -> str:
    """The best name: the first with a dot that is no loopback name, else the first that
    is no loopback name, else the first at all (a host with nothing better)."""
    given = [name.strip().rstrip(".") for name in names if name and name.strip().rstrip(".")]
    usable = [name for name in given if not is_loopback_name(name)]
    dotted = [name for name in usable if "." in name]
    return (dotted or usable or given or ["localhost"])[0]


def host_names() -> list[str]:
    """The host's names as getfqdn() sees them (the resolver's for its address), then
    gethostname()'s: one lookup, as getfqdn() makes."""
    host = ""
    with contextlib.suppress(OSError):
        host = socket.gethostname()
    names: list[str] = []
    with contextlib.suppress(OSError, UnicodeError):
        primary, aliases, _ = socket.gethostbyaddr(host)
        names = [primary, *aliases]
    return [*names, host]


def own_name() -> str:
    """This gateway's name when HOSTNAME is not set: never localhost when it has another."""
    return choose(host_names())


def warning(name: str) -> str | None:
    """One line for `scanmail check` and `status` when name will not do for other servers."""
    if is_loopback_name(name):
        why = "a name for loopback"
    elif "." not in name:
        why = "no domain"
    else:
        return None
    return (f"this gateway's name is {name!r} ({why}), in its greeting, HELO, Received: and "
            f"alerts; set HOSTNAME=mx.example.org (its full name) in scanmail.env")
