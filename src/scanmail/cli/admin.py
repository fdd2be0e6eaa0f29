"""The admin's commands: quarantine list/show/release/delete/purge, check, status."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Attach the admin commands to the scanmail group."""
