"""Named model sizes (data): `preset=<name>` in the run config picks one as the base
`ModelConfig`, `model.*` keys override it.

`default` is `ModelConfig()` (sized for the CPU online study); `small` is for quick tests and
demos; `large` for GPU nodes. Parameter counts: `recsys_matta.models.size.param_counts`.
"""

from __future__ import annotations

from recsys_matta.specs.model import ModelConfig

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
