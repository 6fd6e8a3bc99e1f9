"""A standalone servable sub-network (plain PyTorch; this module must never import TorchRec).

It holds sliced copies of exactly the weights its sub-network uses: the embedding tables cut to
the d columns it reads (all tables stacked in one `nn.EmbeddingBag`, each feature offset to its
table's rows) and a fixed-width `Tower`. Inputs are the KJT's flat tensors, so serving needs no
TorchRec either:

    values  (N,)      ids, feature-major, keys in spec order   (= batch.sparse.values())
    lengths (F * B,)  bag sizes, feature-major                 (= batch.sparse.lengths())
    dense   (B, D)    transformed dense features               (= batch.dense)

Save with `save(path)` and load with `StandaloneModel.load(path)`: `to_dict()` is plain numbers,
strings, lists and tensors (format `FORMAT`; `torch.load(..., weights_only=True)` reads it). `export(values, lengths, dense)` gives a `torch.export` program with
dynamic batch size.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from recsys_matta.models.tower import Tower
from recsys_matta.specs.model import TowerConfig, Widths

# The serving artifact's format (`to_dict`); /2: the tower as a list of block configs.
FORMAT = "recsys_matta.standalone/2"


class StandaloneModel(nn.Module):
    """Embedding bags + a fixed-width tower -> logits.

    Args:
        feature_names: sparse features in KJT key order (spec order).
        feature_tables: the table of each feature.
        table_rows: rows of each table, in the order they are stacked.
        pooling: `mean` or `sum`.
        num_dense: D, dense feature tokens.
        tower: the tower's config (narrow = wide: a fixed sub-network).
        label: human-readable name of the sub-network (e.g. the Choice label).
    """

    def __init__(
        self,
        feature_names: list[str],
        feature_tables: list[str],
        table_rows: dict[str, int],
        pooling: str,
        num_dense: int,
        tower: TowerConfig,
        label: str = "",
    ) -> None:
        super().__init__()
        if tower.student() != tower.ta():
            raise ValueError(f"a standalone tower has one width per unit, got {tower}")
        self.feature_names, self.feature_tables = list(feature_names), list(feature_tables)
        self.table_rows, self.pooling, self.label = dict(table_rows), pooling, label
        starts, total = {}, 0
        for t, n in self.table_rows.items():
            starts[t] = total
            total += n
        self.d = tower.d_model[0]
        self.embedding = nn.EmbeddingBag(total, self.d, mode=pooling, include_last_offset=True)
        self.register_buffer(
            "row_offsets", torch.tensor([starts[t] for t in self.feature_tables], dtype=torch.long)
        )  # (F,) first row of each feature's table in the stacked weight
        self.register_buffer(
            "table_sizes", torch.tensor([self.table_rows[t] for t in self.feature_tables], dtype=torch.long)
        )  # (F,)
        self.tower = Tower(len(self.feature_names), num_dense, tower)
        self.widths: Widths = tower.ta()

    def pooled(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """KJT values / lengths -> pooled embeddings (B, F, d)."""
        n_feat = self.row_offsets.shape[0]
        per_feature = lengths.view(n_feat, -1).sum(dim=1)  # (F,) ids of each feature
        rows = values.long() + torch.repeat_interleave(
            self.row_offsets, per_feature, output_size=values.shape[0]
        )  # (N,) row in the stacked table
        offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)]).long()  # (F*B + 1,)
        bags = self.embedding(rows, offsets)  # (F * B, d)
        return bags.view(n_feat, -1, self.d).transpose(0, 1)  # (B, F, d)

    def check_ids(self, values: torch.Tensor, lengths: torch.Tensor) -> None:
        """Raise ValueError naming the feature when an id is outside its table."""
        per_feature = lengths.view(self.row_offsets.shape[0], -1).sum(dim=1)
        limit = torch.repeat_interleave(self.table_sizes, per_feature)
        bad = (values < 0) | (values >= limit)
        if bool(bad.any()):
            feat = torch.repeat_interleave(torch.arange(len(self.feature_names)), per_feature)[bad][0]
            name = self.feature_names[int(feat)]
            raise ValueError(
                f"feature {name!r}: id outside [0, {self.table_rows[self.feature_tables[int(feat)]]})"
            )

    def forward(self, values: torch.Tensor, lengths: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits (B,)."""
        return self.tower.forward_at(self.pooled(values, lengths), dense, self.widths)

    def dynamic_shapes(self) -> dict[str, dict[int, object]]:
        """`torch.export` dynamic shapes: any batch size and any number of ids."""
        batch = torch.export.Dim("batch", min=1, max=1 << 24)
        nnz = torch.export.Dim("nnz", min=1, max=1 << 31)
        return {"values": {0: nnz}, "lengths": {0: len(self.feature_names) * batch}, "dense": {0: batch}}

    def export(
        self, values: torch.Tensor, lengths: torch.Tensor, dense: torch.Tensor
    ) -> torch.export.ExportedProgram:
        """`torch.export` this model with dynamic batch size and id count (example inputs).

        Traced size-obliviously, so the program also serves batches of one row (plain export
        would specialise on "batch != 1" and reject them).
        """
        import torch.fx.experimental._config as fx_config

        with fx_config.patch(backed_size_oblivious=True):
            return torch.export.export(self.eval(), (values, lengths, dense), dynamic_shapes=self.dynamic_shapes())

    def num_parameters(self) -> dict[str, int]:
        """`dense` (tower) and `embedding` (table rows x d) parameter counts."""
        return {
            "dense": sum(p.numel() for p in self.tower.parameters()),
            "embedding": self.embedding.weight.numel(),
        }

    def to_dict(self) -> dict:
        """Everything needed to rebuild the model: plain numbers, strings and tensors."""
        return {
            "format": FORMAT,
            "feature_names": self.feature_names,
            "feature_tables": self.feature_tables,
            "table_rows": self.table_rows,
            "pooling": self.pooling,
            "label": self.label,
            "num_dense": self.tower.num_dense,
            "tower": self.tower.cfg.model_dump(mode="json"),
            "state_dict": self.state_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "StandaloneModel":
        if d.get("format") != FORMAT:
            raise ValueError(
                f"standalone model format {d.get('format')!r}, this version reads {FORMAT!r}: "
                f"re-register the model with this version"
            )
        model = cls(
            d["feature_names"], d["feature_tables"], d["table_rows"], d["pooling"],
            int(d["num_dense"]), TowerConfig.model_validate(d["tower"]), d.get("label", ""),
        )  # fmt: skip
        model.load_state_dict(d["state_dict"])
        return model

    def save(self, path: str | Path) -> None:
        torch.save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "StandaloneModel":
        return cls.from_dict(torch.load(path, map_location=map_location, weights_only=True))
