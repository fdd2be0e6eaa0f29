"""setup_logging(): syslog facility mail, plus stderr for what a person should see."""

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
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(f"{ident}: %(message)s"))
    stderr.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.addHandler(stderr)
