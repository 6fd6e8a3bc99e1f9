"""The nested-block contract: what every Mix'n'Match unit of a tower can do at a width.

A block is built for the narrowest and widest input it reads (`build`) and then runs, counts and
extracts itself at any width between its narrow and wide ones, given the width of its input:

    block = NestedGAU.build(cfg, in_narrow, in_wide, fan)     # cfg: its config (specs/model.py)
    y     = block.forward_at(x, width)            # x (..., m) with m <= in_wide
    n     = type(block).count(m, width)           # parameters of that sub-block
    m_out = type(block).out_features(m, width)    # its output width
    small = block.extract(m, width)               # a standalone copy, narrow = wide = width

Widths are tuples (`(e, s)` for a GAU, `(w,)` for a dense layer, `()` for a residual block);
the tower skips a block whose width is None (a TA-only block outside the sub-network).
`BLOCK_TYPES` (recsys_matta.modules) maps each config `kind` to its module class.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

Width = tuple[int, ...]


class NestedBlock(Protocol):
    """See the module docstring."""

    @classmethod
    def build(cls, cfg: Any, in_narrow: int, in_wide: int, fan: str) -> "NestedBlock": ...

    def forward_at(self, x: torch.Tensor, width: Width) -> torch.Tensor: ...

    @staticmethod
    def count(in_features: int, width: Width) -> int: ...

    @staticmethod
    def out_features(in_features: int, width: Width) -> int: ...

    def extract(self, in_features: int, width: Width) -> nn.Module: ...
