"""Atomic checkpoints: write a temp file, fsync, rename; a crash never leaves a half checkpoint.

A checkpoint holds everything to continue the online run exactly: both models, both optimizers,
the global step, RNG states, the finished days and their metric records: tensors, numbers,
strings, lists and dicts only, read back with `torch.load(weights_only=True)`
(`recsys_matta.safeload`) and never unpickled: a planted file that would run code is refused,
naming it.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys_matta.errors import UserError
from recsys_matta.safeload import UnsafeFileError, load_tensors

CKPT_RE = re.compile(r"^day=(.+)\.pt$")
log = logging.getLogger(__name__)


def _old_numpy_rng_globals() -> list:
    """Checkpoints written before the RNG state was plain data hold numpy's MT19937 key as an
    ndarray: these globals rebuild a plain numeric array (no code), allowed for checkpoints only."""
    from numpy._core.multiarray import _reconstruct

    return [_reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


class CheckpointError(UserError):
    """A checkpoint file is missing or cannot be read (the message names it)."""


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
    """The checkpoint at `path`; `CheckpointError` naming the file when it is missing,
    truncated or otherwise unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = load_tensors(path, "a checkpoint", allow=_old_numpy_rng_globals())
    except UnsafeFileError as e:
        raise CheckpointError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - truncated zip, bad pickle, ...: all mean unreadable
        why = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {why})") from None
    if not isinstance(state, dict) or "done_days" not in state:
        raise CheckpointError(f"{path}: not a recsys-matta trainer checkpoint")
    return state


def load_newest(ckpt_dir: Path, day_key: Callable[[str], Any]) -> tuple[str, dict] | None:
    """(day, state) of the newest READABLE checkpoint in `ckpt_dir` (None when there is none).
    An unreadable newer one is skipped with a warning that names it and says how to recover;
    when none is readable, `CheckpointError` lists them all."""
    ckpts = list_checkpoints(ckpt_dir)
    failures = []
    for day in sorted(ckpts, key=day_key, reverse=True):
        try:
            state = load_checkpoint(ckpts[day])
        except CheckpointError as e:
            failures.append(str(e))
            continue
        for bad in failures:
            log.warning(
                "%s; falling back to %s (the checkpoint after %s): the days after it are trained "
                "again. To recover, move the unreadable file out of %s (it is replaced when its "
                "day is trained again).", bad, ckpts[day], day, ckpt_dir,
            )  # fmt: skip
        return day, state
    if failures:
        raise CheckpointError(
            f"no readable checkpoint in {ckpt_dir}: " + "; ".join(failures)
            + ". Move them away to start the run from scratch (or restore them from a backup)."
        )
    return None


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
    """torch, numpy and Python RNG states as tensors / numbers / lists (no numpy objects)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {
        "bit_generator": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
        "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss),
    }  # fmt: skip
    version, internal, gauss_next = random.getstate()
    python_state = {"version": version, "internal": list(internal), "gauss_next": gauss_next}
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": python_state}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    if isinstance(n, dict):
        key = n["key"].numpy().astype(np.uint32)
        np.random.set_state((n["bit_generator"], key, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    else:  # an older checkpoint: numpy's own tuple
        np.random.set_state(n)
    p = state["python"]
    if isinstance(p, dict):
        random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    else:
        random.setstate(p)
