"""daysumm: the nightly report (mail) and the statistics page (HTML)."""
