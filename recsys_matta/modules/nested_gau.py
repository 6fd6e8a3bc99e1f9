"""Gated Attention Unit (Hua et al. 2022, "Transformer Quality in Linear Time") with every
projection M-nested (paper Figure 3), over feature-field tokens.

For tokens X (B, n, d) and widths (d, e, s):

    H    = LayerNorm(X)                                  # pre-norm, nested by slicing
    U, V = φ(H W_u), φ(H W_v)                            # (B, n, e)   φ = SiLU
    Z    = φ(H W_z)                                      # (B, n, s)   shared dim
    Q, K = Z γ_q + β_q,  Z γ_k + β_k                     # per-dim scale + offset
    A    = relu(Q Kᵀ / n)²                               # (B, n, n)
    Y    = X + (U ⊙ A V) W_o                             # residual, (B, n, d)

The Student runs widths (d_S, e_S, s_S) on the top-left blocks of the same weights; any
(d, e, s) up to the TA's is a valid sub-block (Mix'n'Match). A `NestedBlock`
(recsys_matta.modules.block) with width `(e, s)`; d is the width of its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys_matta.modules.block import Width
from recsys_matta.modules.nested_linear import Fan, MNestedLinear
from recsys_matta.modules.nested_norm import NestedLayerNorm

# γ starts at 1 + N(0, GAMMA_NOISE²) and β at 0, so Q ≈ K ≈ Z and the relu² kernel starts as a
# token similarity (Hua et al.'s N(0, 0.02²) γ starts it at A ≈ 0, with a vanishing gradient).
GAMMA_NOISE = 0.1
# W_o starts at zero: a fresh block is the identity (the residual branch grows from 0).
OUT_INIT_GAIN = 0.0


class NestedGAU(nn.Module):
    """A nested GAU block.

    Args:
        d_student: Student token width d_S.
        d_ta: TA token width d_TA.
        e_student: Student expansion dim.
        e_ta: TA expansion dim.
        s_student: Student shared (query/key) dim.
        s_ta: TA shared dim.
        fan: fan-in rule of the shared projections (`MNestedLinear`).
    """

    def __init__(
        self, d_student: int, d_ta: int, e_student: int, e_ta: int, s_student: int, s_ta: int, fan: Fan = "nested"
    ) -> None:
        super().__init__()
        self.d_student, self.d_ta = d_student, d_ta
        self.e_student, self.e_ta = e_student, e_ta
        self.s_student, self.s_ta = s_student, s_ta
        self.norm = NestedLayerNorm(d_student, d_ta)
        self.to_u = MNestedLinear(d_student, d_ta, e_student, e_ta, fan=fan)
        self.to_v = MNestedLinear(d_student, d_ta, e_student, e_ta, fan=fan)
        self.to_z = MNestedLinear(d_student, d_ta, s_student, s_ta, fan=fan)
        self.gamma = nn.Parameter(torch.empty(2, s_ta))  # rows: q, k
        self.beta = nn.Parameter(torch.zeros(2, s_ta))
        self.to_out = MNestedLinear(e_student, e_ta, d_student, d_ta, init_gain=OUT_INIT_GAIN)
        with torch.no_grad():
            self.gamma.normal_(1.0, GAMMA_NOISE)

    @classmethod
    def build(cls, cfg, in_narrow: int, in_wide: int, fan: Fan = "nested") -> "NestedGAU":
        """From a `GAUBlockConfig` over tokens of width d_S = `in_narrow` .. d_TA = `in_wide`."""
        return cls(in_narrow, in_wide, *cfg.expansion, *cfg.shared, fan=fan)

    def forward_at(self, x: torch.Tensor, width: Width) -> torch.Tensor:
        """GAU at widths (d = x.shape[-1], e, s) = width: x (B, n, d) -> (B, n, d)."""
        e, s = width
        d, n = x.shape[-1], x.shape[-2]
        h = self.norm.forward_at(x)  # (B, n, d)
        u = F.silu(self.to_u.forward_at(h, e))  # (B, n, e)
        v = F.silu(self.to_v.forward_at(h, e))  # (B, n, e)
        z = F.silu(self.to_z.forward_at(h, s))  # (B, n, s)
        q = z * self.gamma[0, :s] + self.beta[0, :s]  # (B, n, s)
        k = z * self.gamma[1, :s] + self.beta[1, :s]  # (B, n, s)
        a = F.relu(torch.bmm(q, k.transpose(1, 2)) / n).square()  # (B, n, n)
        return x + self.to_out.forward_at(u * torch.bmm(a, v), d)

    def forward(self, x_student: torch.Tensor, x_ta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Student (B, n, d_S) and TA (B, n, d_TA) tokens through the block at their widths."""
        return (
            self.forward_at(x_student, (self.e_student, self.s_student)),
            self.forward_at(x_ta, (self.e_ta, self.s_ta)),
        )

    @staticmethod
    def count(d: int, width: Width) -> int:
        """Parameters of the (d, e, s) sub-block."""
        e, s = width
        return (
            NestedLayerNorm.count(d)
            + 2 * MNestedLinear.count(d, e)
            + MNestedLinear.count(d, s)
            + 4 * s
            + MNestedLinear.count(e, d)
        )

    @staticmethod
    def out_features(d: int, width: Width) -> int:
        return d

    def extract(self, d: int, width: Width) -> "NestedGAU":
        """A standalone copy of the (d, e, s) sub-block."""
        e, s = width
        new = NestedGAU(d, d, e, e, s, s)
        new.norm = self.norm.extract(d)
        new.to_u = self.to_u.extract(d, e)
        new.to_v = self.to_v.extract(d, e)
        new.to_z = self.to_z.extract(d, s)
        new.to_out = self.to_out.extract(e, d)
        with torch.no_grad():
            new.gamma.copy_(self.gamma[:, :s])
            new.beta.copy_(self.beta[:, :s])
        return new

    def extra_repr(self) -> str:
        return (
            f"d={self.d_student}/{self.d_ta}, e={self.e_student}/{self.e_ta}, "
            f"s={self.s_student}/{self.s_ta}"
        )
