"""sigupdate: fresh signatures, clamd reloaded and confirmed, alarm when stale.

update (the run) -> steps, freshclam, sources (SIG_SOURCES), database (files and their
ages), canary and reload (clamd confirmed to run the new database). `scanmail status`
uses what is exported here.
"""

from scanmail.sigupdate.database import Freshness, freshness

__all__ = ["Freshness", "freshness"]
