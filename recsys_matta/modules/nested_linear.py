"""M-nested Dense (paper Algorithm 2): the Student weight is the top-left block of the TA weight.

    W   : (N_TA, M_TA)   torch layout out x in;  b : (N_TA,)
    O_S  = I_S  @ W[:N_S, :M_S].T + b[:N_S]
    O_TA = I_TA @ W.T + b  = concat(I_TA[:, :M_S] W_S.T + I_TA[:, M_S:] W_1.T,  I_TA @ W_2.T) + b

Widths are arguments (`forward_at(x, out_features)`), never module state, so one module serves
the Student, the TA and every Mix'n'Match sub-network. Slicing only: no weight is ever copied on
the forward path (`F.linear` reads strided views).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Fan = Literal["nested", "ta_fan", "student_fan"]  # = ModelConfig.ta_init


def nested_normal_(weight: torch.Tensor, fan_in: float, gain: float = 1.0) -> torch.Tensor:
    """LeCun/He normal init, `std = gain / sqrt(fan_in)` (in place)."""
    with torch.no_grad():
        return weight.normal_(0.0, gain / math.sqrt(max(fan_in, 1.0)))


class MNestedLinear(nn.Module):
    """A dense layer whose Student weight is a slice of its TA weight.

    Args:
        in_student: Student input width M_S.
        in_ta: TA input width M_TA (>= in_student).
        out_student: Student output width N_S.
        out_ta: TA output width N_TA (>= out_student).
        share_params: True: one `weight` (out_ta, in_ta) / `bias` (out_ta,), the Student uses the
            top-left block (M-nesting). False: separate `student_weight` / `student_bias`
            (paper Table 4 ablation).
        init_gain: weights start as N(0, gain^2 / fan_in); biases start at 0. `init_gain=0`
            starts the weight at zero.
        fan: the fan-in of a shared weight: `nested` = sqrt(in_student * in_ta) (neither model
            at its standalone scale), `ta_fan` = in_ta (the TA starts as a standalone TA would, the
            Student block smaller), `student_fan` = in_student. Unshared weights use their own
            fan-in.
    """

    def __init__(
        self,
        in_student: int,
        in_ta: int,
        out_student: int,
        out_ta: int,
        share_params: bool = True,
        init_gain: float = 1.0,
        fan: Fan = "nested",
    ) -> None:
        super().__init__()
        if not (0 < in_student <= in_ta and 0 < out_student <= out_ta):
            raise ValueError(
                f"MNestedLinear needs 0 < student <= TA widths, got in {in_student}/{in_ta}, "
                f"out {out_student}/{out_ta}"
            )
        self.in_student, self.in_ta = in_student, in_ta
        self.out_student, self.out_ta = out_student, out_ta
        self.share_params = share_params
        self.init_gain, self.fan = init_gain, fan
        self.weight = nn.Parameter(torch.empty(out_ta, in_ta))
        self.bias = nn.Parameter(torch.empty(out_ta))
        if share_params:
            self.student_weight = None
            self.student_bias = None
        else:
            self.student_weight = nn.Parameter(torch.empty(out_student, in_student))
            self.student_bias = nn.Parameter(torch.empty(out_student))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fans = {"nested": math.sqrt(self.in_student * self.in_ta), "ta_fan": self.in_ta, "student_fan": self.in_student}
        nested_normal_(self.weight, fans[self.fan] if self.share_params else self.in_ta, self.init_gain)
        nn.init.zeros_(self.bias)
        if self.student_weight is not None and self.student_bias is not None:
            nested_normal_(self.student_weight, self.in_student, self.init_gain)
            nn.init.zeros_(self.student_bias)

    def student_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(W_S, b_S)`: views `W[:N_S, :M_S]`, `b[:N_S]` when shared, else the separate ones."""
        if self.student_weight is not None and self.student_bias is not None:
            return self.student_weight, self.student_bias
        return self.weight[: self.out_student, : self.in_student], self.bias[: self.out_student]

    def forward(
        self, x_student: torch.Tensor, x_ta: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Student and TA outputs.

        Two-input form: `x_student` (..., M_S), `x_ta` (..., M_TA). Single-input form
        (`x_ta=None`, the first nested layer, I_S = I_TA): both read `x_student`, the Student
        its first M_S features (all of them when M_S = M_TA).

        Returns:
            `(y_student (..., N_S), y_ta (..., N_TA))`.
        """
        if x_ta is None:
            x_ta = x_student
            x_student = x_student[..., : self.in_student]
        w_s, b_s = self.student_params()
        return F.linear(x_student, w_s, b_s), F.linear(x_ta, self.weight, self.bias)

    def forward_at(self, x: torch.Tensor, out_features: int, student: bool = False) -> torch.Tensor:
        """A width-selected output: `x (..., m) @ W[:out, :m].T + b[:out]` (Mix'n'Match).

        `student=True` with `share_params=False` uses the separate Student weight (its exact
        widths); with shared parameters it is the same slice either way.
        """
        m = x.shape[-1]
        if student and not self.share_params:
            w, b = self.student_params()
            if (out_features, m) != tuple(w.shape):
                raise ValueError(
                    f"unshared Student weight is {tuple(w.shape)}, asked for ({out_features}, {m})"
                )
            return F.linear(x, w, b)
        if m > self.in_ta or out_features > self.out_ta:
            raise ValueError(
                f"asked for ({out_features}, {m}) from a ({self.out_ta}, {self.in_ta}) weight"
            )
        return F.linear(x, self.weight[:out_features, :m], self.bias[:out_features])

    @staticmethod
    def count(in_features: int, out_features: int) -> int:
        """Parameters of the `(out_features, in_features)` sub-layer (weight + bias)."""
        return out_features * in_features + out_features

    def extract(self, in_features: int, out_features: int) -> "MNestedLinear":
        """A standalone copy of the `(out_features, in_features)` block (Student = TA width)."""
        new = MNestedLinear(in_features, in_features, out_features, out_features)
        with torch.no_grad():
            new.weight.copy_(self.weight[:out_features, :in_features])
            new.bias.copy_(self.bias[:out_features])
        return new

    def extra_repr(self) -> str:
        return (
            f"in={self.in_student}/{self.in_ta}, out={self.out_student}/{self.out_ta}, "
            f"share_params={self.share_params}"
        )
