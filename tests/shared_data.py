"""The small real datasets in ../shared/data (MovieLens latest-small, a Criteo sample). CI has
them; a fresh clone may not: tests that read them are marked `needs_shared_data` and skipped,
with the reason, when the folder is absent. `$MATTA_SHARED_DATA` points elsewhere."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MATTA_SHARED_DATA", REPO.parent / "shared" / "data"))

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent (the shared datasets, see its SOURCES.md)"
)
