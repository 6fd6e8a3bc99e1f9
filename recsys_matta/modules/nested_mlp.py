"""Flat nested blocks (the MLP head), each a `NestedBlock` (recsys_matta.modules.block):

    NestedDense     h -> relu(h @ W[:w, :m].T + b[:w])       layer nesting: (w_S, w_TA)
    ResidualBlock   h -> h + W_2 relu(W_1 h + b_1) + b_2     depth nesting, at the input's width
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recsys_matta.modules.block import Width
from recsys_matta.modules.nested_linear import Fan, MNestedLinear


class NestedDense(nn.Module):
    """A nested hidden layer with ReLU.

    Args:
        in_student: narrowest input width it is built for (Student).
        in_ta: widest input width (TA).
        out_student: Student output width.
        out_ta: TA output width.
        fan: fan-in rule of the shared weight (`MNestedLinear`).
    """

    def __init__(self, in_student: int, in_ta: int, out_student: int, out_ta: int, fan: Fan = "nested") -> None:
        super().__init__()
        self.linear = MNestedLinear(in_student, in_ta, out_student, out_ta, init_gain=math.sqrt(2.0), fan=fan)

    @classmethod
    def build(cls, cfg, in_narrow: int, in_wide: int, fan: Fan = "nested") -> "NestedDense":
        return cls(in_narrow, in_wide, cfg.width[0], cfg.width[1], fan=fan)

    def forward_at(self, x: torch.Tensor, width: Width) -> torch.Tensor:
        """x (B, m) -> (B, w)."""
        return F.relu(self.linear.forward_at(x, width[0]))

    @staticmethod
    def count(in_features: int, width: Width) -> int:
        return MNestedLinear.count(in_features, width[0])

    @staticmethod
    def out_features(in_features: int, width: Width) -> int:
        return width[0]

    def extract(self, in_features: int, width: Width) -> "NestedDense":
        new = NestedDense(in_features, in_features, width[0], width[0])
        new.linear = self.linear.extract(in_features, width[0])
        return new


class ResidualBlock(nn.Module):
    """`h + W_2 relu(W_1 h + b_1) + b_2` at any width up to `width` (both weights square and
    nested by slicing). `W_2` starts at zero, so a freshly added block is the identity.

    Args:
        width: the widest input it accepts.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.fc1 = MNestedLinear(width, width, width, width, init_gain=math.sqrt(2.0))
        self.fc2 = MNestedLinear(width, width, width, width, init_gain=0.0)

    @classmethod
    def build(cls, cfg, in_narrow: int, in_wide: int, fan: Fan = "nested") -> "ResidualBlock":
        return cls(in_wide)

    def forward_at(self, h: torch.Tensor, width: Width = ()) -> torch.Tensor:
        """h (B, m) -> (B, m)."""
        m = h.shape[-1]
        return h + self.fc2.forward_at(F.relu(self.fc1.forward_at(h, m)), m)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.forward_at(h)

    @staticmethod
    def count(in_features: int, width: Width = ()) -> int:
        return 2 * MNestedLinear.count(in_features, in_features)

    @staticmethod
    def out_features(in_features: int, width: Width = ()) -> int:
        return in_features

    def extract(self, in_features: int, width: Width = ()) -> "ResidualBlock":
        new = ResidualBlock(in_features)
        new.fc1 = self.fc1.extract(in_features, in_features)
        new.fc2 = self.fc2.extract(in_features, in_features)
        return new
