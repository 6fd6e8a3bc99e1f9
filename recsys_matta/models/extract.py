"""Mix'n'Match extraction: cut a trained MatTA model down to one sub-network and return a
standalone plain-PyTorch model (`StandaloneModel`) holding only sliced copies of the weights it
uses, with its parameter count.

    extract(model, student_choice(cfg))   # == the Student path
    extract(model, ta_choice(cfg))        # == the TA
    [extract(model, c) for _, c in wide_narrow_wide_sweep(cfg)]
"""

from __future__ import annotations

import torch

from recsys_matta.models.choice import (
    Choice,
    all_choices,
    num_units,
    student_choice,
    ta_choice,
    wide_narrow_wide,
    wide_narrow_wide_sweep,
)
from recsys_matta.models.matta import MatTAModel
from recsys_matta.models.standalone import StandaloneModel

__all__ = [
    "Choice",
    "all_choices",
    "extract",
    "num_units",
    "student_choice",
    "ta_choice",
    "wide_narrow_wide",
    "wide_narrow_wide_sweep",
]


def extract(model: MatTAModel, choice: Choice) -> StandaloneModel:
    """A standalone copy of sub-network `choice` of an (unsharded) `MatTAModel`.

    Its output equals `model.forward_choice(batch, choice)` on
    `(batch.sparse.values(), batch.sparse.lengths(), batch.dense)`.
    """
    tower, w = model.tower_for(choice)
    spec = model.spec
    tables = {c.name: c for c in model.ebc.embedding_bag_configs()}
    feature_tables = [f.table_name for f in spec.sparse]
    order = list(dict.fromkeys(feature_tables))  # tables in first-use order
    standalone = StandaloneModel(
        feature_names=spec.sparse_names,
        feature_tables=feature_tables,
        table_rows={t: tables[t].num_embeddings for t in order},
        pooling=model.cfg.pooling,
        num_dense=len(spec.dense),
        tower=tower.cfg.fixed(w),
        label=choice.label,
    )
    standalone.tower = tower.extract(w)
    with torch.no_grad():
        weights = [model.ebc.embedding_bags[t].weight[:, : w.d] for t in order]  # (rows_t, d)
        standalone.embedding.weight.copy_(torch.cat(weights, dim=0))
    return standalone.eval()
