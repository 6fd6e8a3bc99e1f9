"""Nested MLP head: layer nesting (per-layer Student / TA hidden widths), depth nesting (TA-only
residual blocks) and a final nested Dense to the logits (N_S = N_TA = `out`).

    h_0 = x                                   # (B, M)   M = input width (Student prefix)
    h_i = relu(h_{i-1} @ W_i[:w_i, :w_{i-1}].T + b_i[:w_i])
    h   = h + R_j2(relu(R_j1(h)))             # for each TA-only residual block j that runs
    y   = h @ W_out[:, :w_last].T + b_out     # (B, out)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recsys_matta.modules.nested_linear import Fan, MNestedLinear


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

    def forward_at(self, h: torch.Tensor) -> torch.Tensor:
        w = h.shape[-1]
        return h + self.fc2.forward_at(F.relu(self.fc1.forward_at(h, w)), w)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.forward_at(h)

    @staticmethod
    def count(width: int) -> int:
        return 2 * MNestedLinear.count(width, width)

    def extract(self, width: int) -> "ResidualBlock":
        new = ResidualBlock(width)
        new.fc1 = self.fc1.extract(width, width)
        new.fc2 = self.fc2.extract(width, width)
        return new


class NestedMLP(nn.Module):
    """MLP with nested hidden layers, TA-only residual blocks and a nested output layer.

    Args:
        in_student: Student input width (a prefix of the TA input).
        in_ta: TA input width.
        hidden_student: Student hidden widths.
        hidden_ta: TA hidden widths (same length, each >= the Student's).
        extra_blocks: TA-only residual blocks after the last hidden layer, at the TA's last
            hidden width (or `in_ta` when there is no hidden layer).
        out: output width of both (1 = one logit).
        fan: fan-in rule of the nested layers (`MNestedLinear`).
    """

    def __init__(
        self,
        in_student: int,
        in_ta: int,
        hidden_student: Sequence[int],
        hidden_ta: Sequence[int],
        extra_blocks: int = 0,
        out: int = 1,
        fan: Fan = "nested",
    ) -> None:
        super().__init__()
        if len(hidden_student) != len(hidden_ta):
            raise ValueError(f"hidden widths {list(hidden_student)} / {list(hidden_ta)} differ in length")
        self.in_student, self.in_ta, self.out = in_student, in_ta, out
        self.hidden_student, self.hidden_ta = tuple(hidden_student), tuple(hidden_ta)
        widths_s = (in_student, *hidden_student)
        widths_ta = (in_ta, *hidden_ta)
        self.layers = nn.ModuleList(
            MNestedLinear(widths_s[i], widths_ta[i], widths_s[i + 1], widths_ta[i + 1], init_gain=math.sqrt(2.0), fan=fan)
            for i in range(len(hidden_ta))
        )
        self.extra = nn.ModuleList(ResidualBlock(widths_ta[-1]) for _ in range(extra_blocks))
        self.out_layer = MNestedLinear(widths_s[-1], widths_ta[-1], out, out, fan=fan)

    def forward_at(self, x: torch.Tensor, hidden: Sequence[int], extra: Sequence[int]) -> torch.Tensor:
        """x (B, M) -> (B, out) with hidden widths `hidden` and residual blocks `extra` (indices)."""
        h = x
        for layer, w in zip(self.layers, hidden, strict=True):
            h = F.relu(layer.forward_at(h, w))  # (B, w)
        for j in extra:
            h = self.extra[j].forward_at(h)
        return self.out_layer.forward_at(h, self.out)  # (B, out)

    def forward(self, x_student: torch.Tensor, x_ta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Student (no residual blocks) and TA (all of them) outputs."""
        return (
            self.forward_at(x_student, self.hidden_student, ()),
            self.forward_at(x_ta, self.hidden_ta, range(len(self.extra))),
        )

    @staticmethod
    def count(in_features: int, hidden: Sequence[int], extra_blocks: int, out: int = 1) -> int:
        """Parameters of the sub-MLP with these widths and `extra_blocks` residual blocks."""
        widths = (in_features, *hidden)
        n = sum(MNestedLinear.count(widths[i], widths[i + 1]) for i in range(len(hidden)))
        return n + extra_blocks * ResidualBlock.count(widths[-1]) + MNestedLinear.count(widths[-1], out)

    def extract(self, in_features: int, hidden: Sequence[int], extra: Sequence[int]) -> "NestedMLP":
        """A standalone copy of the sub-MLP (its widths fixed, only the chosen blocks)."""
        widths = (in_features, *hidden)
        new = NestedMLP(in_features, in_features, hidden, hidden, len(extra), self.out)
        new.layers = nn.ModuleList(
            layer.extract(widths[i], widths[i + 1]) for i, layer in enumerate(self.layers)
        )
        new.extra = nn.ModuleList(self.extra[j].extract(widths[-1]) for j in extra)
        new.out_layer = self.out_layer.extract(widths[-1], self.out)
        return new
