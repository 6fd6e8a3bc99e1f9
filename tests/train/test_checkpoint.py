"""Checkpoint files: clear errors naming the file, falling back past an unreadable one, and
never unpickling (a planted pickle is refused and does not run)."""

import logging
import random

import numpy as np
import pytest
import torch

from recsys_matta.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_newest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tests.planted import plant


def _save(folder, day):
    save_checkpoint(folder / f"day={day}.pt", {"done_days": [day], "step": 1})


def test_unreadable_or_foreign_files_are_named(tmp_path):
    p = tmp_path / "day=2026-01-01.pt"
    with pytest.raises(CheckpointError, match=f"{p}: checkpoint not found"):
        load_checkpoint(p)
    p.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=f"{p}: unreadable checkpoint"):
        load_checkpoint(p)
    torch.save([1, 2], p)
    with pytest.raises(CheckpointError, match="not a recsys-matta trainer checkpoint"):
        load_checkpoint(p)


def test_newest_readable_checkpoint_wins_with_a_warning(tmp_path, caplog):
    for d in ("2026-01-01", "2026-01-02", "2026-01-03"):
        _save(tmp_path, d)
    newest = tmp_path / "day=2026-01-03.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # a crash mid-copy, a full disk, ...
    with caplog.at_level(logging.WARNING):
        day, state = load_newest(tmp_path, str)
    assert day == "2026-01-02" and state["done_days"] == ["2026-01-02"]
    (rec,) = caplog.records
    assert str(newest) in rec.getMessage() and "falling back to" in rec.getMessage()
    assert "move the unreadable file out of" in rec.getMessage()
    for d in ("2026-01-01", "2026-01-02"):
        (tmp_path / f"day={d}.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*day=2026-01-03.pt.*day=2026-01-01.pt"):
        load_newest(tmp_path, str)
    assert load_newest(tmp_path / "none", str) is None


@pytest.mark.parametrize("torch_zip", [True, False], ids=["torch-zip", "bare-pickle"])
def test_planted_pickle_in_checkpoint_folder_is_refused_and_never_runs(tmp_path, torch_zip):
    marker = tmp_path / "marker"
    ckpts = tmp_path / "checkpoints"
    bad = plant(ckpts / "day=2026-01-02.pt", marker, torch_zip=torch_zip)
    with pytest.raises(CheckpointError, match=rf"{bad}: refused to load a checkpoint.*would run code"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match=rf"no readable checkpoint in .*{bad}: refused"):
        load_newest(ckpts, str)
    _save(ckpts, "2026-01-01")  # an older good one: used, the planted one named in the warning
    day, _ = load_newest(ckpts, str)
    assert day == "2026-01-01"
    assert not marker.exists()


def test_checkpoints_are_plain_data_and_old_numpy_rng_states_still_load(tmp_path):
    p = tmp_path / "day=2026-01-01.pt"
    save_checkpoint(p, {"done_days": ["2026-01-01"], "rng": rng_state()})
    assert torch.serialization.get_unsafe_globals_in_checkpoint(p) == []  # nothing but plain data
    state = load_checkpoint(p)
    set_rng_state(state["rng"])
    a = (np.random.rand(), random.random(), torch.rand(1).item())
    set_rng_state(state["rng"])
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == a
    # written before the RNG state was plain data: numpy's tuple with an ndarray key
    old = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    save_checkpoint(p, {"done_days": ["2026-01-01"], "rng": old})
    set_rng_state(load_checkpoint(p)["rng"])
    assert np.random.rand() == (np.random.set_state(old["numpy"]), np.random.rand())[1]
