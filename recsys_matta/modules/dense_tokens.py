"""Dense features as tokens (FT-Transformer style), nested along d_model by slicing.

    token_j = x_j * w_j[:d] + b_j[:d]        # x (B, D) -> tokens (B, D, d)
"""

from __future__ import annotations

import torch
from torch import nn

# Same scale as the embedding rows (`recsys_matta.models.embedding.EMBEDDING_INIT`).
TOKEN_INIT = 0.05


class NestedDenseTokens(nn.Module):
    """One learned direction and offset per dense feature.

    Args:
        num_dense: D, the number of dense features.
        d_student: Student token width.
        d_ta: TA token width (size of `weight` / `bias` rows).
    """

    def __init__(self, num_dense: int, d_student: int, d_ta: int) -> None:
        super().__init__()
        if not 0 < d_student <= d_ta:
            raise ValueError(f"NestedDenseTokens needs 0 < d_student <= d_ta, got {d_student}/{d_ta}")
        self.num_dense, self.d_student, self.d_ta = num_dense, d_student, d_ta
        self.weight = nn.Parameter(torch.empty(num_dense, d_ta))
        self.bias = nn.Parameter(torch.empty(num_dense, d_ta))
        with torch.no_grad():
            self.weight.uniform_(-TOKEN_INIT, TOKEN_INIT)
            self.bias.uniform_(-TOKEN_INIT, TOKEN_INIT)

    def forward_at(self, dense: torch.Tensor, d: int) -> torch.Tensor:
        """dense (B, D) -> tokens (B, D, d)."""
        return dense.unsqueeze(-1) * self.weight[:, :d] + self.bias[:, :d]

    @staticmethod
    def count(num_dense: int, d: int) -> int:
        return 2 * num_dense * d

    def extract(self, d: int) -> "NestedDenseTokens":
        new = NestedDenseTokens(self.num_dense, d, d)
        with torch.no_grad():
            new.weight.copy_(self.weight[:, :d])
            new.bias.copy_(self.bias[:, :d])
        return new

    def extra_repr(self) -> str:
        return f"num_dense={self.num_dense}, d={self.d_student}/{self.d_ta}"
