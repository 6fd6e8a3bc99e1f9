"""A planted pickle: unpickling it would create `marker` (tests check it never appears)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # a full unpickle calls open(marker, "w")


def plant(path: Path, marker: Path, *, torch_zip: bool = True, wrap: bool = True) -> Path:
    """Write the payload to `path`: a torch zip file (`torch.save`) or a bare pickle; inside a
    dict that looks like a checkpoint / weights (`wrap`) or alone."""
    obj = {"done_days": ["2026-01-01"], "step": 1, "x": Payload(marker)} if wrap else Payload(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    if torch_zip:
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    return path
