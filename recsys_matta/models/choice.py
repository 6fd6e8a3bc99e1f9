"""Mix'n'Match choices: which sub-network of the nested TA to run or extract.

A `Choice` says, for every nesting unit in forward order, narrow (Student width, False) or wide
(TA width, True); for depth blocks, out (False) or in (True):

    d_model -> nested GAU blocks -> TA-only GAU blocks -> MLP hidden layers -> TA-only MLP blocks

Every choice is a valid sub-network: each layer reads whatever width the previous one produced
(slices of the same weights), so consecutive sizes always agree. All False is the Student, all
True the TA. `wide_narrow_wide(cfg, k)` (the paper's default family) makes the outer k units wide
(ceil(k/2) from the input side, floor(k/2) from the output side) and the middle narrow.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from recsys_matta.models.tower import Widths
from recsys_matta.specs.model import ModelConfig


@dataclass(frozen=True)
class Choice:
    """One Mix'n'Match sub-network.

    Args:
        d_model: wide token width (d_TA) instead of d_S; embeddings are read at this width.
        gau: per nested GAU block, wide (e_TA, s_TA) instead of (e_S, s_S).
        extra_gau: per TA-only GAU block, in (run) or out.
        mlp: per MLP hidden layer, wide (TA width) instead of the Student width.
        extra_mlp: per TA-only residual MLP block, in or out.
    """

    d_model: bool
    gau: tuple[bool, ...]
    extra_gau: tuple[bool, ...]
    mlp: tuple[bool, ...]
    extra_mlp: tuple[bool, ...]

    def flags(self) -> tuple[bool, ...]:
        """All units in forward order (the order `wide_narrow_wide` counts from both ends)."""
        return (self.d_model, *self.gau, *self.extra_gau, *self.mlp, *self.extra_mlp)

    @classmethod
    def from_flags(cls, cfg: ModelConfig, flags: tuple[bool, ...] | list[bool]) -> "Choice":
        sizes = _sizes(cfg)
        if len(flags) != sum(sizes):
            raise ValueError(f"expected {sum(sizes)} flags for this config, got {len(flags)}")
        parts, i = [], 0
        for n in sizes:
            parts.append(tuple(bool(f) for f in flags[i : i + n]))
            i += n
        return cls(parts[0][0], parts[1], parts[2], parts[3], parts[4])

    def check(self, cfg: ModelConfig) -> None:
        got = (1, len(self.gau), len(self.extra_gau), len(self.mlp), len(self.extra_mlp))
        if got != _sizes(cfg):
            raise ValueError(
                f"choice has (d_model, gau, extra_gau, mlp, extra_mlp) = {got} units, "
                f"the config has {_sizes(cfg)}"
            )

    def widths(self, cfg: ModelConfig) -> Widths:
        """The concrete widths of this sub-network under `cfg`."""
        self.check(cfg)
        return Widths(
            d=cfg.d_ta if self.d_model else cfg.d_student,
            gau=tuple(
                (cfg.gau_expansion_ta, cfg.gau_shared_ta) if w else (cfg.gau_expansion_student, cfg.gau_shared_student)
                for w in self.gau
            ),
            extra_gau=tuple(j for j, on in enumerate(self.extra_gau) if on),
            mlp=tuple(t if w else s for w, s, t in zip(self.mlp, cfg.mlp_student, cfg.mlp_ta)),
            extra_mlp=tuple(j for j, on in enumerate(self.extra_mlp) if on),
        )

    @property
    def label(self) -> str:
        """Short name, e.g. `d=W gau=WN xgau=1 mlp=NW xmlp=0` (W/N wide/narrow, 1/0 in/out)."""

        def wn(t: tuple[bool, ...]) -> str:
            return "".join("W" if f else "N" for f in t) or "-"

        def io(t: tuple[bool, ...]) -> str:
            return "".join("1" if f else "0" for f in t) or "-"

        return (
            f"d={wn((self.d_model,))} gau={wn(self.gau)} xgau={io(self.extra_gau)} "
            f"mlp={wn(self.mlp)} xmlp={io(self.extra_mlp)}"
        )


def _sizes(cfg: ModelConfig) -> tuple[int, int, int, int, int]:
    return (1, cfg.gau_blocks, cfg.ta_extra_gau_blocks, len(cfg.mlp_ta), cfg.ta_extra_mlp_blocks)


def num_units(cfg: ModelConfig) -> int:
    """Number of nesting units (flags) of a choice under `cfg`."""
    return sum(_sizes(cfg))


def student_choice(cfg: ModelConfig) -> Choice:
    return Choice.from_flags(cfg, [False] * num_units(cfg))


def ta_choice(cfg: ModelConfig) -> Choice:
    return Choice.from_flags(cfg, [True] * num_units(cfg))


def all_choices(cfg: ModelConfig, limit: int = 4096) -> list[Choice]:
    """Every choice (2^units of them), Student first, TA last. Refuses above `limit`."""
    n = num_units(cfg)
    if 2**n > limit:
        raise ValueError(f"{2**n} choices for {n} units exceed limit={limit}; use wide_narrow_wide_sweep")
    return [Choice.from_flags(cfg, flags) for flags in itertools.product((False, True), repeat=n)]


def wide_narrow_wide(cfg: ModelConfig, k: int) -> Choice:
    """The outer `k` units wide (ceil(k/2) from the input end, floor(k/2) from the output end),
    the middle narrow. k = 0 is the Student, k = `num_units(cfg)` the TA."""
    n = num_units(cfg)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..{n} (the number of nesting units)")
    front, back = (k + 1) // 2, k // 2
    return Choice.from_flags(cfg, [i < front or i >= n - back for i in range(n)])


def wide_narrow_wide_sweep(cfg: ModelConfig) -> list[tuple[int, Choice]]:
    """`(k, choice)` for k = 0, 2, 4, ... and finally all units (the TA)."""
    n = num_units(cfg)
    ks = list(range(0, n + 1, 2))
    if ks[-1] != n:
        ks.append(n)
    return [(k, wide_narrow_wide(cfg, k)) for k in ks]
