"""A standalone servable sub-network (plain PyTorch; this module must never import TorchRec).

It holds sliced copies of exactly the weights its sub-network uses: the embedding tables cut to
the d columns it reads (all tables stacked in one `nn.EmbeddingBag`, each feature offset to its
table's rows) and a fixed-width `Tower`. Inputs are the KJT's flat tensors, so serving needs no
TorchRec either:

    values  (N,)      ids, feature-major, keys in spec order   (= batch.sparse.values())
    lengths (F * B,)  bag sizes, feature-major                 (= batch.sparse.lengths())
    dense   (B, D)    transformed dense features               (= batch.dense)

Save with `save(folder)` and load with `StandaloneModel.load(folder)`: the folder holds
`config.json` (the format `FORMAT`, the features, tables and the tower's block configs: JSON) and
`state_dict.pt` (the weights: tensors only, read with `torch.load(weights_only=True)`). Nothing is
pickled and nothing in the files can run code; a file that is not plain tensors is refused
(`recsys_matta.safeload`). `to_dict()` is the same content in memory. `export(values, lengths,
dense)` gives a `torch.export` program with dynamic batch size.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from recsys_matta.errors import UserError
from recsys_matta.models.tower import Tower
from recsys_matta.safeload import load_tensors
from recsys_matta.specs.model import TowerConfig, Widths

# The serving artifact's format (`to_dict`, `save`): /3 a folder of config.json + state_dict.pt.
FORMAT = "recsys_matta.standalone/3"
# /2 (one .pt: the same config and state dict in one dict of plain values) is still read.
READS = (FORMAT, "recsys_matta.standalone/2")
CONFIG_FILE, WEIGHTS_FILE = "config.json", "state_dict.pt"
REREGISTER = (
    "It was written by an older recsys-matta (a pickled module), which this version refuses to "
    "unpickle: re-register the model with this version (`matta register`, or re-run its day with "
    "`matta daily --day D --force`)"
)


class ArtifactFormatError(UserError, ValueError):
    """A model artifact of an unknown or old format (the message names the file)."""


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

    def config(self) -> dict:
        """The model's dims and configs (JSON): everything but the weights."""
        return {
            "format": FORMAT,
            "feature_names": self.feature_names,
            "feature_tables": self.feature_tables,
            "table_rows": self.table_rows,
            "pooling": self.pooling,
            "label": self.label,
            "num_dense": self.tower.num_dense,
            "tower": self.tower.cfg.model_dump(mode="json"),
        }

    def to_dict(self) -> dict:
        """Everything needed to rebuild the model: `config()` plus the state dict (tensors)."""
        return {**self.config(), "state_dict": self.state_dict()}

    @classmethod
    def from_dict(cls, d: dict, source: str = "standalone model") -> "StandaloneModel":
        if d.get("format") not in READS:
            raise ArtifactFormatError(
                f"{source}: format {d.get('format')!r}, this version reads {' or '.join(READS)}: "
                f"re-register the model with this version"
            )
        model = cls(
            d["feature_names"], d["feature_tables"], d["table_rows"], d["pooling"],
            int(d["num_dense"]), TowerConfig.model_validate(d["tower"]), d.get("label", ""),
        )  # fmt: skip
        model.load_state_dict(d["state_dict"])
        return model

    def save(self, folder: str | Path) -> None:
        """Write `folder/config.json` and `folder/state_dict.pt` (tensors only)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config(), indent=1, sort_keys=True))
        torch.save(dict(self.state_dict()), folder / WEIGHTS_FILE)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "StandaloneModel":
        """A saved model (CPU): a `save` folder, or a /2 single file. Never unpickles: a file
        that is not plain tensors / JSON-able values raises `UnsafeFileError` naming it."""
        path = Path(path)
        if path.is_dir():
            cfg_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
            for f in (cfg_file, weights):
                if not f.is_file():
                    raise ArtifactFormatError(f"{f}: missing (not a {FORMAT} model folder)")
            try:
                config = json.loads(cfg_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ArtifactFormatError(f"{cfg_file}: not JSON ({e})") from None
            state = load_tensors(weights, "model weights", pickled_module_hint=REREGISTER)
            if not isinstance(state, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
            ):
                raise ArtifactFormatError(f"{weights}: not a state dict (names -> tensors)")
            if not isinstance(config, dict) or "state_dict" in config:
                raise ArtifactFormatError(f"{cfg_file}: not a {FORMAT} model config")
            model = cls.from_dict({**config, "state_dict": state}, source=str(cfg_file))
        else:
            obj = load_tensors(path, "model weights", pickled_module_hint=REREGISTER)
            if not isinstance(obj, dict):
                raise ArtifactFormatError(
                    f"{path}: a {type(obj).__name__}, not a model artifact: re-register the model "
                    f"with this version"
                )
            model = cls.from_dict(obj, source=str(path))
        return model.to(map_location)
