"""setup_logging(): syslog facility mail, plus stderr for what a person should see.

Without a syslog socket everything syslog would get goes to stderr instead.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

SYSLOG_SOCKET = "/dev/log"


def setup_logging(ident: str, verbose: bool = False) -> None:
    """Log to syslog (mail facility) as ident; to stderr WARNING and up, or all with verbose."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    to_syslog = False
    if os.path.exists(SYSLOG_SOCKET):
        try:
            syslog = logging.handlers.SysLogHandler(
                address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_MAIL
            )
        except OSError:
            pass
        else:
            syslog.setFormatter(logging.Formatter(f"{ident}[{os.getpid()}]: %(message)s"))
            syslog.setLevel(logging.INFO)
            root.addHandler(syslog)
            to_syslog = True
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(f"{ident}: %(message)s"))
    # No syslog socket (a container, a chroot): stderr gets what syslog would have, so a
    # log line is never lost (systemd's journal keeps a unit's stderr).
    quiet = logging.WARNING if to_syslog else logging.INFO
    stderr.setLevel(logging.DEBUG if verbose else quiet)
    root.addHandler(stderr)
