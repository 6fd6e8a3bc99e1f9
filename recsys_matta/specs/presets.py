"""Named model sizes (data): `preset=<name>` in the run config picks one as the base
`ModelConfig`, `model.*` keys override it (e.g. `model.d_model=[8,16]`,
`model.blocks.1.width=[64,256]`).

`default` is `ModelConfig()` (sized for the CPU online study); `small` is for quick tests and
demos; `large` for GPU nodes. Parameter counts: `recsys_matta.models.size.param_counts`.
"""

from __future__ import annotations

from recsys_matta.specs.model import DenseBlockConfig as Dense
from recsys_matta.specs.model import GAUBlockConfig as GAU
from recsys_matta.specs.model import ModelConfig
from recsys_matta.specs.model import ResidualBlockConfig as Residual

PRESETS: dict[str, ModelConfig] = {
    "small": ModelConfig(
        d_model=(8, 16),
        blocks=[GAU(expansion=(16, 64), shared=(8, 16)), Dense(width=(64, 256)), Dense(width=(16, 64)), Residual()],
    ),
    "default": ModelConfig(),
    "large": ModelConfig(
        d_model=(32, 64),
        blocks=[
            GAU(expansion=(64, 256), shared=(32, 64)),
            GAU(expansion=(64, 256), shared=(32, 64)),
            GAU(expansion=256, shared=64, ta_only=True),
            Dense(width=(256, 1024)),
            Dense(width=(64, 256)),
            Residual(),
            Residual(),
        ],
    ),
}


def get_preset(name: str) -> ModelConfig:
    """A copy of preset `name` (ValueError naming the known presets otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].model_copy(deep=True)
