"""Model configuration: the tower as ONE list of nesting units (paper section 3.2), as data.

    d_model  (d_S, d_TA)             unit 0: token width; the tables have d_TA columns
    blocks   [gau, ..., dense, ..., residual, ...]     units 1..n, in forward order

Every unit has a narrow (Student) and a wide (TA) width; a TA-only block (depth nesting) is out
(narrow) or in (wide). A sub-network is one width per unit (`Widths`); a `Choice` of narrow /
wide per unit resolves to one (recsys_matta.models.choice). Token blocks (GAU) come first and
run on the (B, T, d) tokens; flat blocks (dense layers, residual blocks) run on the flattened
(B, d * T) vector. Adding a block type: its config class here (with `kind`, `narrow`, `wide`,
`fixed`), its module in recsys_matta.modules (the `NestedBlock` contract) and one entry in
`recsys_matta.modules.BLOCK_TYPES`.

A width is a tuple of ints, or None for a block that does not run: GAU `(e, s)`, dense `(w,)`,
residual `()`. Width selection is data here and an argument of `forward_at` / extraction, never
global state. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Width = tuple[int, ...] | None  # one unit's width; None: the block is skipped


def _pair(v: Any) -> Any:
    """`n` -> `(n, n)`; `[a, b]` kept (validated as (narrow, wide) below)."""
    return (v, v) if isinstance(v, int) else v


def _check_pair(name: str, v: tuple[int, int]) -> tuple[int, int]:
    if not 0 < v[0] <= v[1]:
        raise ValueError(f"{name} {list(v)}: expected [narrow, wide] with 0 < narrow <= wide")
    return v


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: ClassVar[Literal["tokens", "flat"]]
    group: ClassVar[str]  # short name in choice labels (`gau`, `mlp`, ...)

    ta_only: bool = False

    @property
    def label_group(self) -> str:
        return ("x" if self.ta_only else "") + self.group

    @property
    def narrow(self) -> Width:
        """The Student's width (None: a TA-only block the Student skips)."""
        raise NotImplementedError

    @property
    def wide(self) -> Width:
        raise NotImplementedError

    def admits(self, width: Width) -> bool:
        """`width` lies between the narrow and the wide width (None only for a TA-only block)."""
        if width is None:
            return self.ta_only
        lo, hi = self.narrow if self.narrow is not None else self.wide, self.wide
        assert hi is not None
        return len(width) == len(hi) and all(a <= x <= b for x, a, b in zip(width, lo, hi))

    def fixed(self, width: tuple[int, ...]) -> "_Block":
        """The config of this block cut to exactly `width` (narrow = wide, always run)."""
        raise NotImplementedError


class GAUBlockConfig(_Block):
    """A nested GAU block over the tokens.

    Args:
        expansion: `[e_S, e_TA]` expansion dims (an int for both).
        shared: `[s_S, s_TA]` shared (query/key) dims (an int for both).
        ta_only: only the TA runs it (depth nesting), at its wide widths; give one width.
    """

    kind: Literal["gau"] = "gau"
    stage: ClassVar = "tokens"
    group: ClassVar = "gau"
    expansion: tuple[int, int]
    shared: tuple[int, int]

    @field_validator("expansion", "shared", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        return _pair(v)

    @model_validator(mode="after")
    def _widths(self) -> "GAUBlockConfig":
        _check_pair("gau expansion", self.expansion)
        _check_pair("gau shared", self.shared)
        if self.ta_only and (self.expansion[0] != self.expansion[1] or self.shared[0] != self.shared[1]):
            raise ValueError("a TA-only gau block runs at one width: give expansion and shared as single ints")
        return self

    @property
    def narrow(self) -> Width:
        return None if self.ta_only else (self.expansion[0], self.shared[0])

    @property
    def wide(self) -> Width:
        return (self.expansion[1], self.shared[1])

    def fixed(self, width: tuple[int, ...]) -> "GAUBlockConfig":
        e, s = width
        return GAUBlockConfig(expansion=(e, e), shared=(s, s))


class DenseBlockConfig(_Block):
    """A nested hidden layer `relu(h W[:w, :m]^T + b[:w])` on the flat vector.

    Args:
        width: `[w_S, w_TA]` output widths (an int for both).
    """

    kind: Literal["dense"] = "dense"
    stage: ClassVar = "flat"
    group: ClassVar = "mlp"
    width: tuple[int, int]

    @field_validator("width", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        return _pair(v)

    @model_validator(mode="after")
    def _widths(self) -> "DenseBlockConfig":
        _check_pair("dense width", self.width)
        if self.ta_only:
            raise ValueError("a dense block changes the width: it cannot be TA-only (use a residual block)")
        return self

    @property
    def narrow(self) -> Width:
        return (self.width[0],)

    @property
    def wide(self) -> Width:
        return (self.width[1],)

    def fixed(self, width: tuple[int, ...]) -> "DenseBlockConfig":
        return DenseBlockConfig(width=(width[0], width[0]))


class ResidualBlockConfig(_Block):
    """`h + W_2 relu(W_1 h)` at the width of its input (its weights are sized for the widest
    input and sliced).

    Args:
        ta_only: only the TA runs it (depth nesting; the default).
    """

    kind: Literal["residual"] = "residual"
    stage: ClassVar = "flat"
    group: ClassVar = "res"
    ta_only: bool = True

    @property
    def label_group(self) -> str:
        return "xmlp" if self.ta_only else "res"

    @property
    def narrow(self) -> Width:
        return None if self.ta_only else ()

    @property
    def wide(self) -> Width:
        return ()

    def fixed(self, width: tuple[int, ...]) -> "ResidualBlockConfig":
        return ResidualBlockConfig(ta_only=False)


BlockConfig = Annotated[Union[GAUBlockConfig, DenseBlockConfig, ResidualBlockConfig], Field(discriminator="kind")]


@dataclass(frozen=True)
class Widths:
    """One sub-network: the token width and one width per block (None: skipped).

    Args:
        d: token width d_model.
        blocks: per block of the config, its width (`(e, s)`, `(w,)`, `()`) or None.
    """

    d: int
    blocks: tuple[Width, ...]

    def to_dict(self) -> dict:
        return {"d": self.d, "blocks": [None if w is None else list(w) for w in self.blocks]}

    @classmethod
    def from_dict(cls, d: dict) -> "Widths":
        return cls(int(d["d"]), tuple(None if w is None else tuple(int(x) for x in w) for w in d["blocks"]))


class TowerConfig(BaseModel):
    """The dense tower: token width and the list of nesting blocks.

    Args:
        d_model: `[d_S, d_TA]`: the Student reads the first d_S dims of every pooled embedding
            and dense token, the TA all d_TA (= the tables' dim).
        blocks: the nesting blocks in forward order, token blocks (`gau`) before flat blocks
            (`dense`, `residual`); each is one Mix'n'Match unit.
    """

    model_config = ConfigDict(extra="forbid")

    d_model: tuple[int, int] = (16, 32)
    blocks: list[BlockConfig] = Field(
        default_factory=lambda: [
            GAUBlockConfig(expansion=(32, 128), shared=(16, 32)),
            DenseBlockConfig(width=(128, 512)),
            DenseBlockConfig(width=(32, 128)),
            ResidualBlockConfig(),
        ]
    )

    @field_validator("d_model", mode="before")
    @classmethod
    def _pairs(cls, v: Any) -> Any:
        return _pair(v)

    @model_validator(mode="after")
    def _order(self) -> "TowerConfig":
        _check_pair("d_model", self.d_model)
        seen_flat = False
        for i, b in enumerate(self.blocks):
            if b.stage == "flat":
                seen_flat = True
            elif seen_flat:
                raise ValueError(f"blocks[{i}] ({b.kind}) runs on tokens: token blocks must come before flat blocks")
        return self

    # ---- units ---------------------------------------------------------------------------
    @property
    def num_units(self) -> int:
        """Mix'n'Match units: d_model, then every block."""
        return 1 + len(self.blocks)

    @property
    def groups(self) -> tuple[str, ...]:
        """Label group of every unit (`d`, `gau`, `xgau`, `mlp`, `xmlp`, `res`)."""
        return ("d", *(b.label_group for b in self.blocks))

    @property
    def num_token_blocks(self) -> int:
        return sum(b.stage == "tokens" for b in self.blocks)

    def widths(self, flags: tuple[bool, ...] | list[bool]) -> Widths:
        """The sub-network with unit i wide (True) or narrow (False)."""
        if len(flags) != self.num_units:
            raise ValueError(f"expected {self.num_units} flags (d_model + {len(self.blocks)} blocks), got {len(flags)}")
        return Widths(
            d=self.d_model[1] if flags[0] else self.d_model[0],
            blocks=tuple(b.wide if f else b.narrow for b, f in zip(self.blocks, flags[1:])),
        )

    def student(self) -> Widths:
        return self.widths([False] * self.num_units)

    def ta(self) -> Widths:
        return self.widths([True] * self.num_units)

    def check(self, w: Widths) -> None:
        """Raise ValueError unless `w` is a sub-network of this tower."""
        bad = []
        if not self.d_model[0] <= w.d <= self.d_model[1]:
            bad.append(f"d={w.d} outside {list(self.d_model)}")
        if len(w.blocks) != len(self.blocks):
            bad.append(f"{len(w.blocks)} block widths for {len(self.blocks)} blocks")
        else:
            bad += [f"blocks[{i}] ({b.kind}) width {x}" for i, (b, x) in enumerate(zip(self.blocks, w.blocks)) if not b.admits(x)]
        if bad:
            raise ValueError("not a sub-network of this tower: " + "; ".join(bad))

    def fixed(self, w: Widths) -> "TowerConfig":
        """The tower that is exactly sub-network `w` (narrow = wide; skipped blocks dropped)."""
        self.check(w)
        blocks = [b.fixed(x) for b, x in zip(self.blocks, w.blocks) if x is not None]
        return TowerConfig(d_model=(w.d, w.d), blocks=blocks)


class ModelConfig(TowerConfig):
    """Architecture of the shared-embedding MatTA model (the tower, and how it is shared).

    Args:
        share_params: M-nesting on (Student weights are slices of TA weights). Off gives
            separate Student and TA weights (paper Table 4 ablation).
        pooling: pooling of multi-valued embedding bags.
        ta_init: fan-in of the nested (shared) dense weights, N(0, gain^2 / fan_in): `ta_fan`
            (default) M_TA: the TA starts as a standalone TA would, the Student block smaller;
            `nested` sqrt(M_S M_TA) (the TA starts 1.2-1.4x per layer above a standalone TA,
            which costs the TA inside MatTA its lead; docs/results.md); `student_fan` M_S (the
            Student starts as a standalone Student). A separate (unshared) TA tower follows it
            too; the Student's does not.
    """

    share_params: bool = True
    pooling: Literal["sum", "mean"] = "mean"
    ta_init: Literal["nested", "ta_fan", "student_fan"] = "ta_fan"

    def tower(self) -> TowerConfig:
        return TowerConfig(d_model=self.d_model, blocks=list(self.blocks))
