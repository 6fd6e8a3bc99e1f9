"""The shared TorchRec embedding tables: one `EmbeddingBagCollection` built from the spec, run
once per batch, read by every tower (the Student reads the first d_S dims: Matryoshka)."""

from __future__ import annotations

import hashlib

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedTensor

from recsys_matta.specs import FeatureSpec

# Rows start uniform in [-EMBEDDING_INIT, EMBEDDING_INIT] (plain modules: torchrec's
# weight_init_min / weight_init_max; trained tables: `init_rows`, chunk by chunk).
EMBEDDING_INIT = 0.05
# Rows per chunk of the trained tables' init: each chunk has its own generator, so any shard
# (rows x columns) of a table is filled without building the table, on any world size.
INIT_CHUNK_ROWS = 1 << 16

_POOLING = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def table_configs(spec: FeatureSpec, dim: int, pooling: str) -> list[EmbeddingBagConfig]:
    """One table per sparse feature, or per shared `table` name (tables in first-use order,
    their features in spec order)."""
    features: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    for f in spec.sparse:
        features.setdefault(f.table_name, []).append(f.name)
        rows[f.table_name] = f.num_embeddings
    return [
        EmbeddingBagConfig(
            name=table,
            num_embeddings=rows[table],
            embedding_dim=dim,
            feature_names=names,
            pooling=_POOLING[pooling],
            weight_init_min=-EMBEDDING_INIT,
            weight_init_max=EMBEDDING_INIT,
        )
        for table, names in features.items()
    ]


def build_ebc(
    spec: FeatureSpec, dim: int, pooling: str, device: torch.device | str | None = None
) -> EmbeddingBagCollection:
    """The model's `EmbeddingBagCollection` (pass `device="meta"` to let DMP materialise it)."""
    return EmbeddingBagCollection(
        tables=table_configs(spec, dim, pooling), device=None if device is None else torch.device(device)
    )


def _chunk_seed(seed: int, table: str, chunk: int) -> int:
    digest = hashlib.sha256(f"{seed}/{table}/{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def init_rows(
    seed: int, table: str, num_rows: int, dim: int, start: int, stop: int, col: slice = slice(None)
) -> torch.Tensor:
    """Initial rows [start, stop) of table `table` ((num_rows, dim), CPU float32), columns `col`:
    uniform in [-EMBEDDING_INIT, EMBEDDING_INIT] from one generator per
    `INIT_CHUNK_ROWS` rows seeded by (seed, table, chunk). Deterministic, and the same whatever
    the sharding: the table is never built in full (memory: one chunk), every shard reads its
    own rows and columns."""
    out = []
    for c in range(start // INIT_CHUNK_ROWS, (stop - 1) // INIT_CHUNK_ROWS + 1 if stop > start else 0):
        c0 = c * INIT_CHUNK_ROWS
        g = torch.Generator().manual_seed(_chunk_seed(seed, table, c))
        rows = torch.empty(min(INIT_CHUNK_ROWS, num_rows - c0), dim).uniform_(-EMBEDDING_INIT, EMBEDDING_INIT, generator=g)
        out.append(rows[max(start, c0) - c0 : min(stop, c0 + INIT_CHUNK_ROWS) - c0, col])
    return torch.cat(out) if out else torch.empty(0, dim)[:, col]


class PooledTokens:
    """Turns the EBC's `KeyedTensor` into tokens (B, F, dim) in spec order. The order check runs
    on the output's keys (sharded collections may order them differently); the permutation is
    cached per key order."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._perm: dict[tuple[str, ...], torch.Tensor | None] = {}

    def __call__(self, kt: KeyedTensor) -> torch.Tensor:
        keys = tuple(kt.keys())
        if keys not in self._perm:
            missing = sorted(set(self.names) - set(keys))
            if missing:
                raise ValueError(f"embedding output lacks features {missing} (has {list(keys)})")
            order = [keys.index(n) for n in self.names]
            self._perm[keys] = None if order == list(range(len(keys))) else torch.tensor(order)
        values = kt.values()  # (B, F * dim)
        x = values.view(values.shape[0], len(keys), -1)  # (B, F, dim) in output key order
        perm = self._perm[keys]
        return x if perm is None else x.index_select(1, perm.to(x.device))
