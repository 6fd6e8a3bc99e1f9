"""The dense tower over feature-field tokens (plain PyTorch, no TorchRec: the standalone serving
model reuses it).

    tokens = [pooled sparse embeddings[..., :d] ; dense tokens]     # (B, T, d), T = F + D
    -> nested GAU blocks -> TA-only GAU blocks -> LayerNorm
    -> flatten d-major: x.transpose(1, 2).reshape(B, d * T)         # Student input = TA prefix
    -> nested MLP -> TA-only residual blocks -> nested Dense -> one logit

d-major flattening puts feature c of token t at `c * T + t`, so with the Student reading the
first d_S dims of every token, its flat vector is exactly the first `d_S * T` entries of the
TA's, and the first MLP layer is an ordinary M-nested Dense.

`TowerDims` holds the narrow (Student) and wide (TA) size of every layer; `Widths` is one
resolved sub-network (what `forward_at` runs). Both are plain frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from recsys_matta.modules import NestedDenseTokens, NestedGAU, NestedLayerNorm, NestedMLP
from recsys_matta.modules.nested_linear import Fan
from recsys_matta.specs.model import ModelConfig


@dataclass(frozen=True)
class Widths:
    """One sub-network of a tower.

    Args:
        d: token width d_model.
        gau: `(e, s)` of each nested GAU block.
        extra_gau: indices of the TA-only GAU blocks that run (at their full e, s).
        mlp: hidden widths of the MLP.
        extra_mlp: indices of the TA-only residual MLP blocks that run.
    """

    d: int
    gau: tuple[tuple[int, int], ...]
    extra_gau: tuple[int, ...]
    mlp: tuple[int, ...]
    extra_mlp: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Widths":
        return cls(
            d=int(d["d"]),
            gau=tuple((int(e), int(s)) for e, s in d["gau"]),
            extra_gau=tuple(int(i) for i in d["extra_gau"]),
            mlp=tuple(int(w) for w in d["mlp"]),
            extra_mlp=tuple(int(i) for i in d["extra_mlp"]),
        )


@dataclass(frozen=True)
class TowerDims:
    """Narrow and wide sizes of every layer of a tower.

    Args:
        num_sparse: F, sparse feature tokens.
        num_dense: D, dense feature tokens.
        d: `(d_S, d_TA)` token widths.
        gau: `(e_S, e_TA, s_S, s_TA)` of each nested GAU block.
        extra_gau: `(e, s)` of each TA-only GAU block.
        mlp_student: Student hidden widths.
        mlp_ta: TA hidden widths.
        extra_mlp: TA-only residual blocks at the TA's last hidden width.
    """

    num_sparse: int
    num_dense: int
    d: tuple[int, int]
    gau: tuple[tuple[int, int, int, int], ...]
    extra_gau: tuple[tuple[int, int], ...]
    mlp_student: tuple[int, ...]
    mlp_ta: tuple[int, ...]
    extra_mlp: int

    @classmethod
    def from_config(cls, num_sparse: int, num_dense: int, cfg: ModelConfig) -> "TowerDims":
        return cls(
            num_sparse=num_sparse,
            num_dense=num_dense,
            d=(cfg.d_student, cfg.d_ta),
            gau=((cfg.gau_expansion_student, cfg.gau_expansion_ta, cfg.gau_shared_student, cfg.gau_shared_ta),)
            * cfg.gau_blocks,
            extra_gau=((cfg.gau_expansion_ta, cfg.gau_shared_ta),) * cfg.ta_extra_gau_blocks,
            mlp_student=tuple(cfg.mlp_student),
            mlp_ta=tuple(cfg.mlp_ta),
            extra_mlp=cfg.ta_extra_mlp_blocks,
        )

    @property
    def num_tokens(self) -> int:
        return self.num_sparse + self.num_dense

    def student(self) -> Widths:
        return Widths(
            d=self.d[0], gau=tuple((g[0], g[2]) for g in self.gau), extra_gau=(), mlp=self.mlp_student, extra_mlp=()
        )

    def ta(self) -> Widths:
        return Widths(
            d=self.d[1],
            gau=tuple((g[1], g[3]) for g in self.gau),
            extra_gau=tuple(range(len(self.extra_gau))),
            mlp=self.mlp_ta,
            extra_mlp=tuple(range(self.extra_mlp)),
        )

    def fixed(self, w: Widths) -> "TowerDims":
        """The dims of a tower that is exactly sub-network `w` (narrow = wide = chosen)."""
        return TowerDims(
            num_sparse=self.num_sparse,
            num_dense=self.num_dense,
            d=(w.d, w.d),
            gau=tuple((e, e, s, s) for e, s in w.gau),
            extra_gau=tuple(self.extra_gau[j] for j in w.extra_gau),
            mlp_student=w.mlp,
            mlp_ta=w.mlp,
            extra_mlp=len(w.extra_mlp),
        )

    def student_only(self) -> "TowerDims":
        """The production baseline: the Student's architecture and nothing else."""
        return self.fixed(self.student())

    def check(self, w: Widths) -> None:
        """Raise ValueError unless `w` is a sub-network of these dims."""
        bad = []
        if not self.d[0] <= w.d <= self.d[1]:
            bad.append(f"d={w.d} outside {self.d}")
        if len(w.gau) != len(self.gau) or any(
            not (g[0] <= e <= g[1] and g[2] <= s <= g[3]) for (e, s), g in zip(w.gau, self.gau)
        ):
            bad.append(f"gau={w.gau} does not fit {self.gau}")
        if len(w.mlp) != len(self.mlp_ta) or any(
            not lo <= x <= hi for x, lo, hi in zip(w.mlp, self.mlp_student, self.mlp_ta)
        ):
            bad.append(f"mlp={w.mlp} outside {self.mlp_student}..{self.mlp_ta}")
        if any(not 0 <= j < len(self.extra_gau) for j in w.extra_gau):
            bad.append(f"extra_gau={w.extra_gau} with {len(self.extra_gau)} blocks")
        if any(not 0 <= j < self.extra_mlp for j in w.extra_mlp):
            bad.append(f"extra_mlp={w.extra_mlp} with {self.extra_mlp} blocks")
        if bad:
            raise ValueError("not a sub-network of this tower: " + "; ".join(bad))

    def num_parameters(self, w: Widths) -> int:
        """Dense parameters sub-network `w` uses (embeddings excluded)."""
        n = NestedDenseTokens.count(self.num_dense, w.d) if self.num_dense else 0
        n += sum(NestedGAU.count(w.d, e, s) for e, s in w.gau)
        n += sum(NestedGAU.count(w.d, *self.extra_gau[j]) for j in w.extra_gau)
        n += NestedLayerNorm.count(w.d)
        return n + NestedMLP.count(w.d * self.num_tokens, w.mlp, len(w.extra_mlp))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TowerDims":
        return cls(
            num_sparse=int(d["num_sparse"]),
            num_dense=int(d["num_dense"]),
            d=(int(d["d"][0]), int(d["d"][1])),
            gau=tuple(tuple(int(x) for x in g) for g in d["gau"]),  # type: ignore[misc]
            extra_gau=tuple((int(e), int(s)) for e, s in d["extra_gau"]),
            mlp_student=tuple(int(x) for x in d["mlp_student"]),
            mlp_ta=tuple(int(x) for x in d["mlp_ta"]),
            extra_mlp=int(d["extra_mlp"]),
        )


class Tower(nn.Module):
    """Tokens -> logit, nested along every axis of `dims`.

    Args:
        dims: narrow / wide size of every layer.
        fan: fan-in rule of the nested (shared) weights (`MNestedLinear`).
    """

    def __init__(self, dims: TowerDims, fan: Fan = "nested") -> None:
        super().__init__()
        self.dims = dims
        (d_s, d_ta), n_tok = dims.d, dims.num_tokens
        self.dense_tokens = NestedDenseTokens(dims.num_dense, d_s, d_ta) if dims.num_dense else None
        self.gau = nn.ModuleList(NestedGAU(d_s, d_ta, *g, fan=fan) for g in dims.gau)
        self.extra_gau = nn.ModuleList(NestedGAU(d_ta, d_ta, e, e, s, s) for e, s in dims.extra_gau)
        self.norm = NestedLayerNorm(d_s, d_ta)
        self.mlp = NestedMLP(d_s * n_tok, d_ta * n_tok, dims.mlp_student, dims.mlp_ta, dims.extra_mlp, fan=fan)

    def tokens(self, pooled: torch.Tensor, dense: torch.Tensor, d: int) -> torch.Tensor:
        """pooled (B, F, >= d) sparse embeddings + dense (B, D) -> tokens (B, T, d)."""
        x = pooled[..., :d]  # (B, F, d): Matryoshka prefix of every pooled embedding
        if self.dense_tokens is None:
            return x
        return torch.cat([x, self.dense_tokens.forward_at(dense, d)], dim=1)  # (B, F + D, d)

    def forward_at(self, pooled: torch.Tensor, dense: torch.Tensor, w: Widths) -> torch.Tensor:
        """Logits (B,) of sub-network `w`."""
        x = self.tokens(pooled, dense, w.d)  # (B, T, d)
        for block, (e, s) in zip(self.gau, w.gau, strict=True):
            x = block.forward_at(x, e, s)
        for j in w.extra_gau:
            block = self.extra_gau[j]
            x = block.forward_at(x, block.e_ta, block.s_ta)
        x = self.norm.forward_at(x)  # (B, T, d)
        flat = x.transpose(1, 2).reshape(x.shape[0], -1)  # (B, d * T), d-major
        return self.mlp.forward_at(flat, w.mlp, w.extra_mlp).squeeze(-1)  # (B,)

    def forward(self, pooled: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of the widest sub-network (all of this tower)."""
        return self.forward_at(pooled, dense, self.dims.ta())

    def extract(self, w: Widths) -> "Tower":
        """A standalone tower holding sliced copies of exactly the weights `w` uses."""
        self.dims.check(w)
        new = Tower(self.dims.fixed(w))
        if self.dense_tokens is not None:
            new.dense_tokens = self.dense_tokens.extract(w.d)
        new.gau = nn.ModuleList(b.extract(w.d, e, s) for b, (e, s) in zip(self.gau, w.gau))
        new.extra_gau = nn.ModuleList(
            self.extra_gau[j].extract(w.d, self.extra_gau[j].e_ta, self.extra_gau[j].s_ta) for j in w.extra_gau
        )
        new.norm = self.norm.extract(w.d)
        new.mlp = self.mlp.extract(w.d * self.dims.num_tokens, w.mlp, w.extra_mlp)
        return new
