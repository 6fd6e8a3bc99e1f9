"""Nested building blocks (plain PyTorch, no TorchRec): every Student weight is a slice of the
TA weight, and every width is an argument of `forward_at`, never module state."""

from recsys_matta.modules.dense_tokens import NestedDenseTokens
from recsys_matta.modules.nested_gau import NestedGAU
from recsys_matta.modules.nested_linear import MNestedLinear
from recsys_matta.modules.nested_mlp import NestedMLP, ResidualBlock
from recsys_matta.modules.nested_norm import NestedLayerNorm

__all__ = ["MNestedLinear", "NestedDenseTokens", "NestedGAU", "NestedLayerNorm", "NestedMLP", "ResidualBlock"]
