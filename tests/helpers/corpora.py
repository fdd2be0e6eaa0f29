"""Where the shared test corpora are: SCANMAIL_CORPORA, else shared/ beside the work tree."""

from __future__ import annotations

import os
from pathlib import Path

# shared/ lies beside the work tree (and beside CI's clone); SCANMAIL_CORPORA overrides
CORPORA = next(
    (path for path in (Path(os.environ.get("SCANMAIL_CORPORA", "/nonexistent")),
                       Path(__file__).resolve().parents[3] / "shared" / "corpora",
                       Path("/work/shared/corpora")) if path.is_dir()),
    Path("/work/shared/corpora"),
)
