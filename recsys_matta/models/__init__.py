"""recsys_matta.models: the MatTA model (shared TorchRec embeddings + nested Student/TA towers),
presets and Mix'n'Match extraction.

Imports are lazy so that `recsys_matta.models.standalone` (serving) loads without TorchRec.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "recsys_matta.specs.model",
    "MatTAModel": "recsys_matta.models.matta",
    "StandaloneModel": "recsys_matta.models.standalone",
    "Tower": "recsys_matta.models.tower",
    "Widths": "recsys_matta.specs.model",
    "Choice": "recsys_matta.models.choice",
    "extract": "recsys_matta.models.extract",
    "PRESETS": "recsys_matta.specs.presets",
    "param_counts": "recsys_matta.models.size",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recsys_matta.models' has no attribute {name!r}")
