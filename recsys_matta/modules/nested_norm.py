"""LayerNorm nested by slicing: a width-`w` input normalises over its `w` features with
`gamma[:w]`, `beta[:w]` (the Student's statistics are over its own dims)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NestedLayerNorm(nn.Module):
    """LayerNorm over the last dim; the width is read from the input.

    Args:
        d_student: Student width (for `forward(x_s, x_ta)` shape checks only).
        d_ta: TA width = size of `weight` / `bias`.
        eps: LayerNorm epsilon.
    """

    def __init__(self, d_student: int, d_ta: int, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0 < d_student <= d_ta:
            raise ValueError(f"NestedLayerNorm needs 0 < d_student <= d_ta, got {d_student}/{d_ta}")
        self.d_student, self.d_ta, self.eps = d_student, d_ta, eps
        self.weight = nn.Parameter(torch.ones(d_ta))
        self.bias = nn.Parameter(torch.zeros(d_ta))

    def forward_at(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1]
        return F.layer_norm(x, (w,), self.weight[:w], self.bias[:w], self.eps)

    def forward(self, x_student: torch.Tensor, x_ta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_at(x_student), self.forward_at(x_ta)

    @staticmethod
    def count(width: int) -> int:
        return 2 * width

    def extract(self, width: int) -> "NestedLayerNorm":
        new = NestedLayerNorm(width, width, self.eps)
        with torch.no_grad():
            new.weight.copy_(self.weight[:width])
            new.bias.copy_(self.bias[:width])
        return new

    def extra_repr(self) -> str:
        return f"{self.d_student}/{self.d_ta}, eps={self.eps}"
