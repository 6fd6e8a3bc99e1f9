"""Parameter counts of the Student and the TA, without building the model."""

from __future__ import annotations

from recsys_matta.models.tower import Tower
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.model import ModelConfig


def embedding_rows(spec: FeatureSpec) -> int:
    """Rows of all embedding tables (a shared table counted once)."""
    return sum({f.table_name: f.num_embeddings for f in spec.sparse}.values())


def param_counts(spec: FeatureSpec, cfg: ModelConfig) -> dict[str, int]:
    """Student counts exclude TA-only weights; embeddings are counted at the dims each model
    reads (rows x d_S, rows x d_TA)."""
    f, d, rows = len(spec.sparse), len(spec.dense), embedding_rows(spec)
    return {
        "student_dense": Tower.count(f, d, cfg, cfg.student()),
        "student_embedding": rows * cfg.d_model[0],
        "ta_dense": Tower.count(f, d, cfg, cfg.ta()),
        "ta_embedding": rows * cfg.d_model[1],
    }
