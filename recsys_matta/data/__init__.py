"""Data: feature encoding, the streaming day reader, the Batch, partitions and generators.

Exports are resolved lazily, so `import recsys_matta.data.synthetic` (e.g. `matta generate`)
does not pay for torch / torchrec.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Batch": "recsys_matta.data.batch",
    "DayReader": "recsys_matta.data.reader",
    "Encoded": "recsys_matta.data.encode",
    "ReadCounts": "recsys_matta.data.encode",
    "check_schema": "recsys_matta.data.encode",
    "encode_table": "recsys_matta.data.encode",
    "needed_columns": "recsys_matta.data.encode",
    "to_batch": "recsys_matta.data.encode",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recsys_matta.data' has no attribute {name!r}")
