"""Exit codes (sysexits) and the GatewayError tree that carries them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses, cron-friendly (see sysexits.h)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    SOFTWARE = 70
    CANTCREAT = 73
    IOERR = 74
    TEMPFAIL = 75
    CONFIG = 78


class GatewayError(Exception):
    """An error the command line reports in one line and turns into an exit code."""

    exit_code: ExitCode = ExitCode.FAILURE


class ConfigError(GatewayError):
    """A setting, pattern line or config file is missing or malformed."""

    exit_code = ExitCode.CONFIG


class TempFailure(GatewayError):
    """Something is down for now; nothing is lost and the next run retries."""

    exit_code = ExitCode.TEMPFAIL


class ScannerUnavailable(TempFailure):
    """The virus scanner could not give an answer (down, timeout, error)."""


class ScanFailed(TempFailure):
    """The scanner was reached but failed on this one object (timeout, dropped stream, error).

    Not a ScannerUnavailable: the scanner is up, and the pass goes on with other mail.
    """


class SpoolError(GatewayError):
    """The spool cannot be read or written."""

    exit_code = ExitCode.IOERR


class SetupError(GatewayError):
    """`scanmail setup` cannot do a step as asked: not root, a tool failed, a file in the way."""

    exit_code = ExitCode.CANTCREAT


class MalformedSpoolFile(GatewayError):
    """A spool file's envelope cannot be read."""

    exit_code = ExitCode.FAILURE
