"""Nested building blocks (plain PyTorch, no TorchRec): every Student weight is a slice of the
TA weight, and every width is an argument of `forward_at`, never module state.

`BLOCK_TYPES` maps a block config's `kind` (recsys_matta.specs.model) to the module that
implements the `NestedBlock` contract (recsys_matta.modules.block) for it.
"""

from recsys_matta.modules.block import NestedBlock
from recsys_matta.modules.dense_tokens import NestedDenseTokens
from recsys_matta.modules.nested_gau import NestedGAU
from recsys_matta.modules.nested_linear import MNestedLinear
from recsys_matta.modules.nested_mlp import NestedDense, ResidualBlock
from recsys_matta.modules.nested_norm import NestedLayerNorm

BLOCK_TYPES: dict[str, type] = {"gau": NestedGAU, "dense": NestedDense, "residual": ResidualBlock}

__all__ = [
    "BLOCK_TYPES",
    "MNestedLinear",
    "NestedBlock",
    "NestedDense",
    "NestedDenseTokens",
    "NestedGAU",
    "NestedLayerNorm",
    "ResidualBlock",
]
