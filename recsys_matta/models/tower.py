"""The dense tower over feature-field tokens (plain PyTorch, no TorchRec: the standalone serving
model reuses it), built from the config's list of nesting blocks (recsys_matta.specs.model).

    tokens = [pooled sparse embeddings[..., :d] ; dense tokens]     # (B, T, d), T = F + D
    -> token blocks (GAU) -> LayerNorm
    -> flatten d-major: x.transpose(1, 2).reshape(B, d * T)         # Student input = TA prefix
    -> flat blocks (dense layers, residual blocks) -> nested Dense -> one logit

d-major flattening puts feature c of token t at `c * T + t`, so with the Student reading the
first d_S dims of every token, its flat vector is exactly the first `d_S * T` entries of the
TA's, and the first flat layer is an ordinary M-nested Dense.

Every block is a `NestedBlock` (recsys_matta.modules.block); `forward_at`, `count` and
`extract` iterate over them with the widths of one sub-network (`Widths`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch
from torch import nn

from recsys_matta.modules import BLOCK_TYPES, MNestedLinear, NestedDenseTokens, NestedLayerNorm
from recsys_matta.modules.nested_linear import Fan
from recsys_matta.specs.model import TowerConfig, Widths


def _in_widths(cfg: TowerConfig, num_tokens: int, w: Widths) -> list[int]:
    """Input width of every block under sub-network `w`, then the output layer's."""
    m, out = w.d, []
    for i, (b, width) in enumerate(zip(cfg.blocks, w.blocks)):
        if i == cfg.num_token_blocks:
            m *= num_tokens  # flattened
        out.append(m)
        if width is not None:
            m = BLOCK_TYPES[b.kind].out_features(m, width)
    if cfg.num_token_blocks == len(cfg.blocks):
        m *= num_tokens
    return out + [m]


class Tower(nn.Module):
    """Tokens -> logit, nested along every unit of `cfg`.

    Args:
        num_sparse: F, sparse feature tokens.
        num_dense: D, dense feature tokens.
        cfg: token width and blocks (narrow = Student, wide = TA).
        fan: fan-in rule of the nested (shared) weights (`MNestedLinear`); TA-only blocks are
            built for the TA's input width.
    """

    def __init__(self, num_sparse: int, num_dense: int, cfg: TowerConfig, fan: Fan = "nested") -> None:
        super().__init__()
        self.num_sparse, self.num_dense = num_sparse, num_dense
        self.cfg = TowerConfig(d_model=cfg.d_model, blocks=list(cfg.blocks))  # blocks are frozen
        (d_s, d_ta), n_tok = cfg.d_model, self.num_tokens
        self.dense_tokens = NestedDenseTokens(num_dense, d_s, d_ta) if num_dense else None
        narrow, wide = _in_widths(cfg, n_tok, cfg.student()), _in_widths(cfg, n_tok, cfg.ta())
        blocks = []
        for i, b in enumerate(cfg.blocks):
            lo = wide[i] if b.ta_only else narrow[i]
            blocks.append(BLOCK_TYPES[b.kind].build(b, lo, wide[i], fan))
        self.blocks = nn.ModuleList(blocks)
        self.norm = NestedLayerNorm(d_s, d_ta)
        self.out = MNestedLinear(narrow[-1], wide[-1], 1, 1, fan=fan)

    @property
    def num_tokens(self) -> int:
        return self.num_sparse + self.num_dense

    def tokens(self, pooled: torch.Tensor, dense: torch.Tensor, d: int) -> torch.Tensor:
        """pooled (B, F, >= d) sparse embeddings + dense (B, D) -> tokens (B, T, d)."""
        x = pooled[..., :d]  # (B, F, d): Matryoshka prefix of every pooled embedding
        if self.dense_tokens is None:
            return x
        return torch.cat([x, self.dense_tokens.forward_at(dense, d)], dim=1)  # (B, F + D, d)

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm.forward_at(x)  # (B, T, d)
        return x.transpose(1, 2).reshape(x.shape[0], -1)  # (B, d * T), d-major

    def forward_at(self, pooled: torch.Tensor, dense: torch.Tensor, w: Widths) -> torch.Tensor:
        """Logits (B,) of sub-network `w`."""
        return self.forward_many(pooled, dense, [w])[0]

    def forward_many(self, pooled: torch.Tensor, dense: torch.Tensor, ws: Sequence[Widths]) -> list[torch.Tensor]:
        """Logits (B,) of each sub-network of `ws`, computing every shared width prefix once:
        sub-networks that agree on the first units (e.g. a wide-narrow-wide model and the TA on
        their wide front) reuse those activations, and autograd runs their backward once. The
        same values as `forward_at` on each."""
        split = self.cfg.num_token_blocks
        memo: dict[tuple, torch.Tensor] = {}
        out = []
        for w in ws:
            key: tuple = (w.d,)
            x = memo.get(key)
            if x is None:
                x = memo[key] = self.tokens(pooled, dense, w.d)  # (B, T, d)
            for i, (block, width) in enumerate(zip(self.blocks, w.blocks, strict=True)):
                key = (*key, width)
                hit = memo.get(key)
                if hit is not None:
                    x = hit
                    continue
                if i == split:
                    x = self._flatten(x)  # (B, d * T)
                if width is not None:
                    x = block.forward_at(x, width)
                memo[key] = x
            if split == len(self.blocks):
                x = self._flatten(x)
            out.append(self.out.forward_at(x, 1).squeeze(-1))  # (B,)
        return out

    def forward(self, pooled: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits (B,) of the widest sub-network (all of this tower)."""
        return self.forward_at(pooled, dense, self.cfg.ta())

    @staticmethod
    def count(num_sparse: int, num_dense: int, cfg: TowerConfig, w: Widths) -> int:
        """Dense parameters sub-network `w` of a tower with config `cfg` uses (no model built)."""
        cfg.check(w)
        ins = _in_widths(cfg, num_sparse + num_dense, w)
        n = NestedDenseTokens.count(num_dense, w.d) if num_dense else 0
        n += sum(
            BLOCK_TYPES[b.kind].count(m, width)
            for b, width, m in zip(cfg.blocks, w.blocks, ins)
            if width is not None
        )
        return n + NestedLayerNorm.count(w.d) + MNestedLinear.count(ins[-1], 1)

    def num_parameters(self, w: Widths) -> int:
        return self.count(self.num_sparse, self.num_dense, self.cfg, w)

    def extract(self, w: Widths) -> "Tower":
        """A standalone tower holding sliced copies of exactly the weights `w` uses."""
        new = Tower(self.num_sparse, self.num_dense, self.cfg.fixed(w))
        ins = _in_widths(self.cfg, self.num_tokens, w)
        if self.dense_tokens is not None:
            new.dense_tokens = self.dense_tokens.extract(w.d)
        new.blocks = nn.ModuleList(
            block.extract(m, width) for block, width, m in zip(self.blocks, w.blocks, ins) if width is not None
        )
        new.norm = self.norm.extract(w.d)
        new.out = self.out.extract(ins[-1], 1)
        return new


@cache
def compiled_forward_many():
    """`Tower.forward_many` through `torch.compile`, made once per process and called with the
    tower as its first argument (so a copied model never calls the original's): one graph per
    set of sub-network widths, the batch dimension dynamic after its first change."""
    return torch.compile(Tower.forward_many)
