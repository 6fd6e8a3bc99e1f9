"""A tiny spec, config and hand-built batch shared by the model tests."""

from __future__ import annotations

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys_matta.data.batch import Batch
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.model import DenseBlockConfig, GAUBlockConfig, ModelConfig, ResidualBlockConfig

# sparse a (10 rows), b (5 + OOV = 6 rows), c (multi-valued, 7 + OOV = 8 rows); dense x, y
TINY_SPEC = FeatureSpec.model_validate(
    {
        "name": "tiny",
        "labels": {"teacher": "p", "event": "click"},
        "features": [
            {"name": "a", "group": "user", "kind": "sparse", "hash_buckets": 10},
            {"name": "x", "group": "user", "kind": "dense"},
            {"name": "b", "group": "context", "kind": "sparse", "vocab_size": 5},
            {"name": "c", "group": "item", "kind": "sparse", "multi_valued": True, "vocab_size": 7},
            {"name": "y", "group": "item", "kind": "dense"},
        ],
    }
)

# a and c share table "shared" (10 rows), so the EBC's output order (a, c, b) differs from the spec's
SHARED_SPEC = FeatureSpec.model_validate(
    {
        "name": "shared",
        "labels": {"teacher": "p"},
        "features": [
            {"name": "a", "group": "user", "kind": "sparse", "hash_buckets": 10, "table": "shared"},
            {"name": "b", "group": "context", "kind": "sparse", "vocab_size": 5},
            {
                "name": "c", "group": "item", "kind": "sparse", "multi_valued": True,
                "hash_buckets": 10, "table": "shared",
            },
            {"name": "x", "group": "item", "kind": "dense"},
        ],
    }
)

# 6 nesting units: d_model, 1 GAU block, 1 TA-only GAU block, 2 MLP layers, 1 TA-only MLP block
TINY_CFG = ModelConfig(
    d_model=(2, 4),
    blocks=[
        GAUBlockConfig(expansion=(3, 6), shared=(2, 3)),
        GAUBlockConfig(expansion=6, shared=3, ta_only=True),
        DenseBlockConfig(width=(3, 5)),
        DenseBlockConfig(width=(2, 4)),
        ResidualBlockConfig(),
    ],
)


def make_batch(spec: FeatureSpec, batch_size: int = 6, seed: int = 0) -> Batch:
    """A hand-built KJT (feature-major, spec order); multi-valued features get 0-3 ids per row
    (row 1, when there is one, is an empty bag)."""
    g = torch.Generator().manual_seed(seed)
    values, lengths = [], []
    for f in spec.sparse:
        if f.multi_valued:
            n = torch.randint(0, 4, (batch_size,), generator=g)
            n[1:2] = 0
        else:
            n = torch.ones(batch_size, dtype=torch.long)
        lengths.append(n)
        values.append(torch.randint(0, f.num_embeddings, (int(n.sum()),), generator=g))
    kjt = KeyedJaggedTensor(keys=spec.sparse_names, values=torch.cat(values), lengths=torch.cat(lengths))
    return Batch(
        sparse=kjt,
        dense=torch.randn(batch_size, len(spec.dense), generator=g),
        teacher=torch.rand(batch_size, generator=g),
        event=torch.randint(0, 2, (batch_size,), generator=g).float(),
    )


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter non-trivial values (zero-initialised ones included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
