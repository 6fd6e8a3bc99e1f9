"""Serving: the Student as an MLflow pyfunc model that scores raw feature rows.

`recsys_matta.serving.pyfunc` imports mlflow and torch; this package's names load lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StudentPyfunc": "recsys_matta.serving.pyfunc",
    "log_student": "recsys_matta.serving.pyfunc",
    "request_table": "recsys_matta.serving.pyfunc",
    "load_weights": "recsys_matta.serving.pyfunc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recsys_matta.serving' has no attribute {name!r}")
