"""Named model sizes and their Student / TA parameter counts.

`default` is `ModelConfig()` (sized for the CPU online study); `small` is for quick tests and
demos; `large` for GPU nodes.
"""

from __future__ import annotations

from recsys_matta.models.config import ModelConfig
from recsys_matta.models.tower import TowerDims
from recsys_matta.specs import FeatureSpec

PRESETS: dict[str, ModelConfig] = {
    "small": ModelConfig(
        d_student=8,
        d_ta=16,
        gau_blocks=1,
        gau_expansion_student=16,
        gau_expansion_ta=64,
        gau_shared_student=8,
        gau_shared_ta=16,
        ta_extra_gau_blocks=0,
        mlp_student=[64, 16],
        mlp_ta=[256, 64],
        ta_extra_mlp_blocks=1,
    ),
    "default": ModelConfig(),
    "large": ModelConfig(
        d_student=32,
        d_ta=64,
        gau_blocks=2,
        gau_expansion_student=64,
        gau_expansion_ta=256,
        gau_shared_student=32,
        gau_shared_ta=64,
        ta_extra_gau_blocks=1,
        mlp_student=[256, 64],
        mlp_ta=[1024, 256],
        ta_extra_mlp_blocks=2,
    ),
}


def get_preset(name: str) -> ModelConfig:
    """A copy of preset `name` (ValueError naming the known presets otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].model_copy(deep=True)


def embedding_rows(spec: FeatureSpec) -> int:
    """Rows of all embedding tables (a shared table counted once)."""
    return sum({f.table_name: f.num_embeddings for f in spec.sparse}.values())


def param_counts(spec: FeatureSpec, cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts without building the model. Student counts exclude TA-only weights;
    embeddings are counted at the dims each model reads (rows x d_S, rows x d_TA)."""
    dims = TowerDims.from_config(len(spec.sparse), len(spec.dense), cfg)
    rows = embedding_rows(spec)
    return {
        "student_dense": dims.num_parameters(dims.student()),
        "student_embedding": rows * cfg.d_student,
        "ta_dense": dims.num_parameters(dims.ta()),
        "ta_embedding": rows * cfg.d_ta,
    }
