"""Atomic checkpoints: write a temp file, fsync, rename; a crash never leaves a half checkpoint.

A checkpoint holds everything to continue the online run exactly: both models, both optimizers,
the global step, RNG states, the finished days and their metric records.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_RE = re.compile(r"^day=(.+)\.pt$")


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(fileobj)` on `<path>.tmp-<pid>`, fsync it, rename onto `path`, fsync the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, payload: dict) -> None:
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_path(ckpt_dir: Path, day: str) -> Path:
    return ckpt_dir / f"day={day}.pt"


def list_checkpoints(ckpt_dir: Path) -> dict[str, Path]:
    """{day: path} of the finished checkpoints in `ckpt_dir` (temp files ignored)."""
    if not ckpt_dir.is_dir():
        return {}
    out = {}
    for p in ckpt_dir.iterdir():
        m = CKPT_RE.match(p.name)
        if m:
            out[m.group(1)] = p
    return out


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
