"""Checkpoint files: clear errors naming the file, and falling back past an unreadable one."""

import logging

import pytest
import torch

from recsys_matta.train.checkpoint import CheckpointError, load_checkpoint, load_newest, save_checkpoint


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
