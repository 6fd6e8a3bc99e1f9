"""A tiny spec, a tiny seeded StandaloneModel and raw request rows with nulls and unseen ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from recsys_matta.models.standalone import StandaloneModel
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.model import DenseBlockConfig, GAUBlockConfig, ModelConfig

SPEC = FeatureSpec.model_validate(
    {
        "name": "tiny",
        "labels": {"teacher": "teacher_prob", "event": "click"},
        "features": [
            {"name": "user_id", "group": "user", "kind": "sparse", "hash_buckets": 50},
            {"name": "user_age", "group": "user", "kind": "sparse", "vocab_size": 4},
            {"name": "tags", "group": "user", "kind": "sparse", "multi_valued": True, "vocab_size": 6},
            {"name": "item", "group": "item", "kind": "sparse", "column": "item_key", "hash_buckets": 30},
            {"name": "price", "group": "item", "kind": "dense", "transform": "log1p", "normalize": True,
             "mean": 1.0, "std": 2.0},
            {"name": "position", "group": "context", "kind": "dense", "default": 1.0},
        ],
    }
)  # fmt: skip

COLUMNS = ["user_id", "user_age", "tags", "item_key", "price", "position"]


def tiny_model(seed: int = 0) -> StandaloneModel:
    """The Student architecture of a tiny config, with seeded random (non-zero) weights."""
    cfg = ModelConfig(
        d_model=(4, 8),
        blocks=[GAUBlockConfig(expansion=(8, 16), shared=(4, 8)), DenseBlockConfig(width=(8, 16)), DenseBlockConfig(width=(4, 8))],
    )
    rows = {f.table_name: f.num_embeddings for f in SPEC.sparse}
    model = StandaloneModel(
        SPEC.sparse_names, [f.table_name for f in SPEC.sparse], rows, "mean", len(SPEC.dense),
        cfg.fixed(cfg.student()), label="student",
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


class PlainModel(torch.nn.Module):
    """Any plain-torch module with the StandaloneModel forward: logit = sum of dense values."""

    def forward(self, values: torch.Tensor, lengths: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return dense.sum(dim=1)  # (B,)


def raw_rows() -> pd.DataFrame:
    """Six request rows as a client sends them: nulls everywhere, unseen ids, extra columns.

    user_id 999999 / item "never-seen": unseen hashed ids; user_age 7 and tag 9: outside the
    vocab (OOV row); None: null id / list / list element / dense value.
    """
    return pd.DataFrame(
        {
            "user_id": [1, 2, None, 999999, 5, 1],  # float64 with NaN, as pandas makes it
            "user_age": [0, 3, 7, None, 1, 2],
            "tags": [[0, 1], [], None, [5, 9], [2, None], [3]],
            "item_key": ["a", "b", None, "never-seen", "a", "c"],
            "price": [1.0, None, 3.5, -2.0, np.nan, 100.0],
            "position": [1, 2, 3, None, 5, 6],
            "click": [1, 0, 0, 1, 0, 0],  # labels and other columns are ignored
            "day": ["2026-11-01"] * 6,
        }
    )


def raw_table() -> pa.Table:
    """The same rows as a typed arrow table, built by hand (what the reader would see)."""
    return pa.table(
        {
            "user_id": pa.array([1, 2, None, 999999, 5, 1], pa.int64()),
            "user_age": pa.array([0, 3, 7, None, 1, 2], pa.int64()),
            "tags": pa.array([[0, 1], [], None, [5, 9], [2, None], [3]], pa.list_(pa.int64())),
            "item_key": pa.array(["a", "b", None, "never-seen", "a", "c"], pa.string()),
            "price": pa.array([1.0, None, 3.5, -2.0, None, 100.0], pa.float64()),
            "position": pa.array([1, 2, 3, None, 5, 6], pa.float64()),
        }
    )


def reference_probs(model: torch.nn.Module, table: pa.Table) -> np.ndarray:
    """The plain torch module on the encoded rows: (B,) float64 probabilities."""
    from recsys_matta.data.encode import encode_table

    enc = encode_table(SPEC, table, source="reference", labels=False)
    with torch.no_grad():
        logits = model(
            torch.from_numpy(enc.values), torch.from_numpy(enc.lengths), torch.from_numpy(enc.dense)
        )
    return torch.sigmoid(logits).double().numpy()
