"""Shared tiny-run settings for tests that train (small preset, small batches, 3 days)."""

from pathlib import Path

from recsys_matta.specs.config import resolve_config

REPO = Path(__file__).resolve().parents[1]
SPEC_PATH = REPO / "feature_specs" / "synthetic.yaml"
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
ROWS_PER_DAY = 1500

TINY = [
    "preset=small",
    "train.batch_size=256",
    "train.eval_batch_size=1024",
    "train.progress=false",
    "train.device=cpu",
    "optim.precondition_frequency=5",
    "loss.distill_ramp=10",
]


def tiny_config(*extra: str):
    return resolve_config(overrides=[*TINY, *extra])


def poison_student(model) -> None:
    """Make `model`'s Student logits NaN from now on (its other outputs unchanged): a non-finite
    loss on the next training step."""
    forward = model.forward_elastic

    def nan_forward(batch, choices, **kw):
        s, t, extra = forward(batch, choices, **kw)
        return s * float("nan"), t, extra

    model.forward_elastic = nan_forward
