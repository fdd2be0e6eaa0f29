"""scanmail: the pass over incoming that decides and routes every message.

decide (DESIGN's policy) -> route (where the file goes) -> alerts; outage (the scanner's
health); runner (the pass); check (decisions that move nothing). The admin commands use
what is exported here.
"""

from scanmail.quarantine import Vet
from scanmail.scan.check import Inspection, Inspector, rescanner
from scanmail.scan.decide import Decision
from scanmail.scan.outage import OUTAGE_MARK
from scanmail.scan.rules import Rules, load_rules
from scanmail.scan.runner import LOCK_NAME, PassSummary, run
from scanmail.scan.scanner import make_scanner

__all__ = ["LOCK_NAME", "OUTAGE_MARK", "Decision", "Inspection", "Inspector", "PassSummary",
           "Rules", "Vet", "load_rules", "make_scanner", "rescanner", "run"]
