"""Mix'n'Match choices: which sub-network of the nested TA to run, train or extract.

A `Choice` says, for every nesting unit of the config in forward order (d_model, then every
block of `cfg.blocks`), narrow (Student width, False) or wide (TA width, True); for a TA-only
block, out (False) or in (True). Every choice is a valid sub-network: each block reads whatever
width the previous one produced (slices of the same weights). All False is the Student, all True
the TA. `wide_narrow_wide(cfg, k)` (the paper's default family) makes the outer k units wide
(ceil(k/2) from the input side, floor(k/2) from the output side) and the middle narrow.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from recsys_matta.specs.model import TowerConfig, Widths


@dataclass(frozen=True)
class Choice:
    """One Mix'n'Match sub-network.

    Args:
        flags: per unit (d_model, then each block), wide / in (True) or narrow / out (False).
        groups: the units' label groups (`TowerConfig.groups`: `d`, `gau`, `xgau`, `mlp`, ...).
    """

    flags: tuple[bool, ...]
    groups: tuple[str, ...]

    @classmethod
    def from_flags(cls, cfg: TowerConfig, flags: tuple[bool, ...] | list[bool]) -> "Choice":
        if len(flags) != cfg.num_units:
            raise ValueError(f"expected {cfg.num_units} flags for this config, got {len(flags)}")
        return cls(tuple(bool(f) for f in flags), cfg.groups)

    def check(self, cfg: TowerConfig) -> None:
        if self.groups != cfg.groups:
            raise ValueError(f"choice has units {self.groups}, the config has {cfg.groups}")

    def widths(self, cfg: TowerConfig) -> Widths:
        """The concrete widths of this sub-network under `cfg`."""
        self.check(cfg)
        return cfg.widths(self.flags)

    @property
    def label(self) -> str:
        """Short name, e.g. `d=W gau=N mlp=NW xmlp=1` (W/N wide/narrow, 1/0 in/out for TA-only
        blocks); consecutive units of one group share a name."""
        parts: list[tuple[str, str]] = []
        for g, f in zip(self.groups, self.flags):
            c = ("1" if f else "0") if g.startswith("x") else ("W" if f else "N")
            if parts and parts[-1][0] == g:
                parts[-1] = (g, parts[-1][1] + c)
            else:
                parts.append((g, c))
        return " ".join(f"{g}={c}" for g, c in parts)


def num_units(cfg: TowerConfig) -> int:
    """Number of nesting units (flags) of a choice under `cfg`."""
    return cfg.num_units


def student_choice(cfg: TowerConfig) -> Choice:
    return Choice.from_flags(cfg, [False] * cfg.num_units)


def ta_choice(cfg: TowerConfig) -> Choice:
    return Choice.from_flags(cfg, [True] * cfg.num_units)


def all_choices(cfg: TowerConfig, limit: int = 4096) -> list[Choice]:
    """Every choice (2^units of them), Student first, TA last. Refuses above `limit`."""
    n = cfg.num_units
    if 2**n > limit:
        raise ValueError(f"{2**n} choices for {n} units exceed limit={limit}; use wide_narrow_wide_sweep")
    return [Choice.from_flags(cfg, flags) for flags in itertools.product((False, True), repeat=n)]


def wide_narrow_wide(cfg: TowerConfig, k: int) -> Choice:
    """The outer `k` units wide (ceil(k/2) from the input end, floor(k/2) from the output end),
    the middle narrow. k = 0 is the Student, k = `num_units(cfg)` the TA."""
    n = cfg.num_units
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..{n} (the number of nesting units)")
    front, back = (k + 1) // 2, k // 2
    return Choice.from_flags(cfg, [i < front or i >= n - back for i in range(n)])


def sweep_ks(cfg: TowerConfig) -> list[int]:
    """K = 0, 2, 4, ... and finally all units (the TA): the reported wide-narrow-wide sweep."""
    n = cfg.num_units
    ks = list(range(0, n + 1, 2))
    return ks if ks[-1] == n else ks + [n]


def wide_narrow_wide_sweep(cfg: TowerConfig) -> list[tuple[int, Choice]]:
    """`(k, choice)` for every K of `sweep_ks`."""
    return [(k, wide_narrow_wide(cfg, k)) for k in sweep_ks(cfg)]
