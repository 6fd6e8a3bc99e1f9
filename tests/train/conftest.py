from datetime import date
from pathlib import Path

import pytest

from recsys_matta.data.synthetic import generate
from recsys_matta.specs import load_spec
from recsys_matta.specs.config import resolve_config

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "feature_specs" / "synthetic.yaml"
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]

# tiny and quick: small preset, small batches, no progress bars
TINY = [
    "preset=small",
    "train.batch_size=256",
    "train.eval_batch_size=1024",
    "train.progress=false",
    "train.device=cpu",
    "optim.precondition_frequency=5",
    "loss.distill_ramp=10",
]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate(out=root, days=3, rows_per_day=1500, seed=7, start_date=date(2026, 1, 1), progress=False)
    return root


@pytest.fixture
def spec():
    return load_spec(SPEC_PATH)


def tiny_config(*extra: str):
    return resolve_config(overrides=[*TINY, *extra])
