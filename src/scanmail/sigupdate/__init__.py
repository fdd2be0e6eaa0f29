"""sigupdate: fresh signatures, clamd reloaded and confirmed, alarm when stale."""
