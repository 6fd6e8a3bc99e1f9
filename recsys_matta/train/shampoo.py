"""Shampoo in the SOAP form (Vyas et al. 2024, "SOAP: Improving and Stabilizing Shampoo using
Adam"), batched over blocks of the same shape.

Every weight matrix W (m x n) is cut into blocks of at most b x b (b = `max_preconditioner_dim`);
a weight that fits is ONE block, so the Student block inside a nested TA weight is preconditioned
jointly with the rest of it (paper Figure 4). Per block, with G its gradient:

    every `factor_every` = k steps (and on none between), with beta = beta_s^k (the same horizon
    in steps as k = 1, from every k-th gradient):
        L <- beta L + (1 - beta) G G^T,   R <- beta R + (1 - beta) G^T G       # Kronecker factors
    G' = Q_L^T G Q_R                                           # the gradient in their eigenbasis
    M <- beta1 M + (1 - beta1) G',   V <- beta2 V + (1 - beta2) G'^2             # Adam moments there
    W <- W - lr Q_L (M_hat / (sqrt(V_hat) + eps)) Q_R^T - lr wd W               # bias-corrected, AdamW
    every `frequency` steps: Q <- qr(L Q) (one power iteration; columns ordered by q_i^T L q_i),
        M rotated into the new basis, V permuted with the columns
On the first step L, R = G G^T, G^T G and Q = their eigenvectors (eigh). A parameter without a
gradient in a step is left alone (as torch.optim does), and every block and 1-D parameter counts
its own steps t (bias correction, factor interval, refresh): one whose first gradient comes late
starts as a fresh one would.

Blocks of one shape (from every weight) are stacked and updated with batched matmuls, so the
Python work per step grows with the number of distinct block shapes, not with the number of
weights (heavyball's SOAP, which this replaces as the default, spent ~27 ms/step in Python on the
default model at batch 1024, more than its matmuls); the elementwise Adam work of all shapes runs
in one call of torch's fused Adam kernel (`_adam`: one pass over the moments, where 8 foreach
ops made 8). 1-D parameters (biases, norm scales) get AdamW with the same settings, as SOAP does
without 1-D preconditioning, in a second such call (their "basis" is the identity; a separate
torch AdamW cost ~0.7 ms a step for ~1,300 numbers on CPU).

Cost: per r x c block a step is 4 products of r*c*(r or c) multiply-adds (the two rotations in,
the two back) plus 2 more on the steps that update the factors; on CPU those matmuls are ~80% of
the step (benchmarks/train_step.py). `rotation_dtype` / `factor_dtype` bfloat16 run them at the
bf16 rate (the optimizer step 0.70x with both, AVX512-BF16); `factor_every` k cuts the step by
about (1 - 1/k) / 3 but costs AucLoss (docs/tuning.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


# Blocks with a side below this rotate in the state's dtype even with rotation_dtype=bfloat16: a
# bf16 bmm of a (k, 32, 128) block costs 2-5x the float32 one on CPU (oneDNN's per-call cost;
# measured 1 thread: 45 vs 20 us, while (2, 256, 256) takes 728 vs 1457 us).
_LOW_PRECISION_MIN_SIDE = 64
# where torch has a fused Adam kernel (torch.optim.Adam(fused=True))
_FUSED_ADAM_DEVICES = ("cpu", "cuda")


def _low_precision(dtype: torch.dtype | None, shape: tuple[int, int]) -> torch.dtype | None:
    """`dtype` where a block of `shape` runs a low-precision product, else None."""
    return None if dtype is None or min(shape) < _LOW_PRECISION_MIN_SIDE else dtype


def _chunks(n: int, b: int) -> list[slice]:
    """[0, n) cut into consecutive slices of at most b."""
    return [slice(i, min(i + b, n)) for i in range(0, n, b)]


@dataclass
class _Block:
    param: nn.Parameter
    rows: slice
    cols: slice


class _Group:
    """All blocks of one shape (r, c), with their stacked state (k = number of blocks)."""

    def __init__(self, shape: tuple[int, int], blocks: list[_Block]):
        self.shape, self.blocks = shape, blocks
        self.state: dict[str, Tensor] = {}  # L (k,r,r) R (k,c,c) QL (k,r,r) QR (k,c,c) M, V (k,r,c)
        self.bases: tuple[Tensor, ...] = ()  # QL^T, QR, QL, QR^T contiguous in the rotation dtype
        self.steps = [0] * len(blocks)  # per block: the steps it took (its Adam bias correction)

    def allocate(self, like: Tensor) -> None:
        """Zero factors and moments, identity bases, for every block (like: (k', r, c))."""
        (r, c), k = self.shape, len(self.blocks)
        eye = lambda d: torch.eye(d, dtype=like.dtype, device=like.device).expand(k, d, d).clone()  # noqa: E731
        zeros = lambda *s: torch.zeros(k, *s, dtype=like.dtype, device=like.device)  # noqa: E731
        self.state = {"L": zeros(r, r), "R": zeros(c, c), "QL": eye(r), "QR": eye(c)}
        self.state |= {"M": zeros(r, c), "V": zeros(r, c)}

    def take(self, idx: list[int] | None) -> dict[str, Tensor]:
        """The state of blocks `idx` (None: all, the state itself; else gathered copies)."""
        return self.state if idx is None else {k: v[idx] for k, v in self.state.items()}

    def put(self, idx: list[int] | None, part: dict[str, Tensor]) -> None:
        """Write `take(idx)`'s tensors back (a no-op for idx None but for replaced ones)."""
        for k, v in part.items():
            if idx is None:
                self.state[k] = v
            else:
                self.state[k][idx] = v

    def set_bases(self, dtype: torch.dtype | None) -> None:
        ql, qr = self.state["QL"], self.state["QR"]
        dtype = _low_precision(dtype, self.shape) or ql.dtype
        self.bases = tuple(q.to(dtype).contiguous() for q in (ql.transpose(1, 2), qr, ql, qr.transpose(1, 2)))

    def grads(self, idx: list[int] | None) -> Tensor:
        blocks = self.blocks if idx is None else [self.blocks[j] for j in idx]
        return torch.stack([b.param.grad[b.rows, b.cols] for b in blocks])  # (k', r, c)

    def units(self) -> list[tuple[list[int] | None, int]]:
        """The blocks that step now, as (indices or None for all, their step number t): the
        blocks with a gradient, split by their own step count (one unit, None, when every block
        has a gradient and the same count: the usual case)."""
        by_t = _due(self.steps, [b.param for b in self.blocks])
        if len(by_t) == 1 and len(next(iter(by_t.values()))) == len(self.blocks):
            return [(None, next(iter(by_t)))]
        return [(idx, t) for t, idx in by_t.items()]


class BlockSOAP:
    """The SOAP update of the module docstring for the 2-D parameters of `params`, AdamW for the
    others. Call `step()` after backward; `zero_grad()` clears the gradients.

    Args:
        params: the parameters (dense weights; embedding tables never come here).
        lr: learning rate.
        betas: Adam (beta1, beta2) in the eigenbasis.
        shampoo_beta: EMA factor beta_s of L and R.
        eps: added to sqrt(V_hat).
        weight_decay: decoupled weight decay.
        frequency: steps between eigenbasis refreshes.
        max_dim: largest block side b.
        factor_every: steps between updates of the Kronecker factors L, R (step t updates them
            when t > 1 and t % factor_every == 0, with EMA factor beta_s ** factor_every: the
            same horizon in steps). 1: every step.
        rotation_dtype: dtype of the four per-step rotation matmuls (G -> G', update -> W):
            None (the state's: float32, or float64 for float64 weights), or bfloat16 for the
            blocks with both sides >= 64 (smaller ones stay in the state's dtype, faster there):
            bases rounded to bf16 once per refresh, products accumulated in fp32 and rounded to
            bf16; ~2x the matmul rate on CPUs with AVX512-BF16 and on GPUs; the factors, their
            refresh, the moments and the weights stay float32.
        factor_dtype: dtype of the factor products G G^T, G^T G (the same rule: None, or
            bfloat16 for blocks with both sides >= 64): the gradient rounded to bf16, the
            product rounded to bf16 and added into the float32 factors. The factors only choose
            the eigenbasis at a refresh, so their rounding moves the basis, not the update.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        betas: tuple[float, float],
        shampoo_beta: float,
        eps: float,
        weight_decay: float,
        frequency: int,
        max_dim: int,
        factor_every: int = 1,
        rotation_dtype: torch.dtype | None = None,
        factor_dtype: torch.dtype | None = None,
    ):
        if factor_every < 1:
            raise ValueError(f"factor_every must be >= 1, got {factor_every}")
        self.factor_every, self.rotation_dtype, self.factor_dtype = factor_every, rotation_dtype, factor_dtype
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.shampoo_beta = lr, betas, shampoo_beta
        self.eps, self.weight_decay, self.frequency, self.max_dim = eps, weight_decay, frequency, max_dim
        self.step_count = 0
        self.matrices = [p for p in self.params if p.dim() == 2]
        self.vectors = [p for p in self.params if p.dim() != 2]  # AdamW: moments M, V per vector
        self.vector_state: list[dict[str, Tensor]] = [{} for _ in self.vectors]
        self.vector_steps = [0] * len(self.vectors)  # per vector: the steps it took
        by_shape: dict[tuple[int, int], list[_Block]] = {}
        for p in self.matrices:
            for rows in _chunks(p.shape[0], max_dim):
                for cols in _chunks(p.shape[1], max_dim):
                    shape = (rows.stop - rows.start, cols.stop - cols.start)
                    by_shape.setdefault(shape, []).append(_Block(p, rows, cols))
        self.groups = [_Group(shape, blocks) for shape, blocks in by_shape.items()]

    # ---- the update -----------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter with a gradient (those without one are left alone, as
        torch.optim does); each block and vector counts its own steps, so one that first gets a
        gradient late is bias-corrected from its own first step."""
        self.step_count += 1
        units = [(g, idx, t) for g in self.groups for idx, t in g.units()]  # (group, blocks, their t)
        vec_t = _due(self.vector_steps, self.vectors)  # t -> vectors with a gradient at their step t
        if self.weight_decay:
            decayed = [p for p in self.matrices if p.grad is not None]
            decayed += [p for p in self.vectors if p.grad is not None]
            torch._foreach_mul_(decayed, 1 - self.lr * self.weight_decay)
        if not units and not vec_t:
            return
        work = []  # (group, idx, t, gradient (k', r, c), its blocks' state, their bases)
        for g, idx, t in units:
            grad = g.grads(idx)  # (k', r, c)
            if grad.dtype in (torch.float16, torch.bfloat16):
                grad = grad.float()
            if not g.state:
                g.allocate(grad)
            part = g.take(idx)
            if t == 1:  # these blocks' first gradient: the factors are its own, the bases theirs
                self._init(part, grad)
                g.put(idx, part)
                g.bases = ()
            if not g.bases:
                g.set_bases(self.rotation_dtype)
            bases = g.bases if idx is None else tuple(b[idx] for b in g.bases)
            work.append((g, idx, t, grad, part, bases))
        for idx in vec_t.values():
            for i in idx:
                if not self.vector_state[i]:
                    zero = torch.zeros_like(self.vectors[i])
                    self.vector_state[i] = {"M": zero, "V": zero.clone()}
        # the gradients in the eigenbasis, then Adam there: one fused pass over the moments of
        # every unit with the same step number (the update lands in zeros: -M_hat / (sqrt(V_hat)
        # + eps)), and one over the vectors, which step in place (their "basis" is the identity)
        gps = [_rotate(b[0], gr, b[1]) for _, _, _, gr, _, b in work]
        ups = [torch.zeros_like(part["M"]) for *_, part, _ in work]  # (k', r, c)
        for ts in sorted({t for _, _, t, *_ in work}):
            at = [j for j, w in enumerate(work) if w[2] == ts]
            _adam([ups[j] for j in at], [gps[j] for j in at], [work[j][4]["M"] for j in at],
                  [work[j][4]["V"] for j in at], ts, 1.0, self.betas, self.eps)  # fmt: skip
        for ts, idx in vec_t.items():
            vec = [self.vectors[i] for i in idx]
            _adam(vec, [p.grad for p in vec], [self.vector_state[i]["M"] for i in idx],
                  [self.vector_state[i]["V"] for i in idx], ts, self.lr, self.betas, self.eps)  # fmt: skip
            for i in idx:
                self.vector_steps[i] = ts
        views, upds = [], []
        for (g, idx, _, _, _, bases), u in zip(work, ups):
            u = _rotate(bases[2], u, bases[3])  # back to the weights' basis
            for j, blk in enumerate(g.blocks if idx is None else [g.blocks[j] for j in idx]):
                views.append(blk.param[blk.rows, blk.cols])
                upds.append(u[j] if u.dtype == blk.param.dtype else u[j].to(blk.param.dtype))
        if views:
            torch._foreach_add_(views, upds, alpha=self.lr)
        bs = self.shampoo_beta**self.factor_every
        for g, idx, t, gr, part, _ in work:
            if t > 1 and t % self.factor_every == 0:  # the first step's factors are the first gradient's
                low = _low_precision(self.factor_dtype, g.shape)
                if low is None:
                    part["L"].baddbmm_(gr, gr.transpose(1, 2), beta=bs, alpha=1 - bs)
                    part["R"].baddbmm_(gr.transpose(1, 2), gr, beta=bs, alpha=1 - bs)
                else:  # CPU bmm has no bf16-in, fp32-out form: the product is rounded to bf16
                    x = gr.to(low)
                    part["L"].mul_(bs).add_(torch.bmm(x, x.transpose(1, 2)), alpha=1 - bs)
                    part["R"].mul_(bs).add_(torch.bmm(x.transpose(1, 2), x), alpha=1 - bs)
            refresh = t % self.frequency == 0
            if refresh:
                self._refresh(part)
            g.put(idx, part)
            if refresh:
                g.set_bases(self.rotation_dtype)
            for j in range(len(g.blocks)) if idx is None else idx:
                g.steps[j] = t

    def _init(self, s: dict[str, Tensor], grad: Tensor) -> None:
        """State `s` of blocks at their first gradient `grad` (k', r, c): the factors its own,
        the bases their eigenvectors, the moments zero."""
        s["L"] = torch.bmm(grad, grad.transpose(1, 2))  # (k', r, r)
        s["R"] = torch.bmm(grad.transpose(1, 2), grad)  # (k', c, c)
        s["QL"], s["QR"] = _eigenvectors(s["L"]), _eigenvectors(s["R"])
        s["M"], s["V"] = torch.zeros_like(grad), torch.zeros_like(grad)

    def _refresh(self, s: dict[str, Tensor]) -> None:
        """One power iteration + QR per factor of state `s`; the moments follow the basis."""
        for fac, q, axis in (("L", "QL", 1), ("R", "QR", 2)):
            old = s[q]
            lq = torch.bmm(s[fac], old)  # (k, d, d)
            order = (old * lq).sum(1).argsort(dim=-1, descending=True)  # (k, d) Rayleigh quotients
            idx = order.unsqueeze(1).expand_as(lq)
            new = _orthonormal(lq.gather(2, idx))
            rot = torch.bmm(new.transpose(1, 2), old)  # old coordinates -> new ones
            if axis == 1:
                s["M"] = torch.bmm(rot, s["M"])
                s["V"] = s["V"].gather(1, order.unsqueeze(2).expand_as(s["V"]))
            else:
                s["M"] = torch.bmm(s["M"], rot.transpose(1, 2))
                s["V"] = s["V"].gather(2, order.unsqueeze(1).expand_as(s["V"]))
            s[q] = new

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads(self.params, set_to_none)

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step_count,
            "groups": [
                {"shape": g.shape, "blocks": len(g.blocks), "block_steps": list(g.steps), **g.state}
                for g in self.groups
            ],
            "vectors": [dict(v) for v in self.vector_state],
            "vector_steps": list(self.vector_steps),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s state onto the parameters' device (checkpoints are read onto
        the CPU). Older states without per-block step counts: every block that has state took
        the global `step` steps."""
        saved = [(tuple(s["shape"]), s["blocks"]) for s in state["groups"]]
        mine = [(g.shape, len(g.blocks)) for g in self.groups]
        if saved != mine:
            raise ValueError(f"Shampoo state has blocks {saved}, the model needs {mine}")
        self.step_count = int(state["step"])
        for g, s in zip(self.groups, state["groups"]):
            device = g.blocks[0].param.device
            g.state = {k: v.to(device, copy=True) for k, v in s.items() if isinstance(v, Tensor)}
            g.steps = [int(n) for n in s.get("block_steps", [self.step_count if g.state else 0] * len(g.blocks))]
            g.bases = ()
        if "vectors" in state:
            if len(state["vectors"]) != len(self.vectors):
                saved_n, mine_n = len(state["vectors"]), len(self.vectors)
                raise ValueError(f"Shampoo state has {saved_n} 1-D parameters, the model needs {mine_n}")
            saved_vectors = [dict(s) for s in state["vectors"]]
        else:  # checkpoints before the fold: a torch AdamW over the 1-D parameters, in order
            saved = (state.get("adam") or {}).get("state", {})
            saved_vectors = [
                {"M": st["exp_avg"], "V": st["exp_avg_sq"]} if st else {}
                for st in (saved.get(i, saved.get(str(i))) for i in range(len(self.vectors)))
            ]
        self.vector_state = [
            {k: v.to(p.device, copy=True) for k, v in s.items()} for p, s in zip(self.vectors, saved_vectors)
        ]
        default = [self.step_count if s else 0 for s in self.vector_state]
        self.vector_steps = [int(n) for n in state.get("vector_steps", default)]

    def factors(self, param: nn.Parameter) -> list[Tensor] | None:
        """[L (r x r), R (c x c)] of the weight's first block (rows and columns from 0: all of
        the weight when it fits one block), or None before that block's first step."""
        for g in self.groups:
            for i, b in enumerate(g.blocks):
                if b.param is param and b.rows.start == 0 and b.cols.start == 0 and g.steps[i]:
                    return [g.state["L"][i].clone(), g.state["R"][i].clone()]
        return None


def _due(steps: list[int], params: list[Tensor]) -> dict[int, list[int]]:
    """{t: indices i whose params[i] has a gradient and steps now for the t-th time (steps[i] + 1)}."""
    by_t: dict[int, list[int]] = {}
    for i, p in enumerate(params):
        if p.grad is not None:
            by_t.setdefault(steps[i] + 1, []).append(i)
    return by_t


def zero_grads(params: Iterable[nn.Parameter], set_to_none: bool = True) -> None:
    """Clear the gradients of `params` (None, or zeros in place)."""
    for p in params:
        if p.grad is not None:
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()


def _adam(
    params: list[Tensor], grads: list[Tensor], ms: list[Tensor], vs: list[Tensor], t: int, lr: float,
    betas: tuple[float, float], eps: float,
) -> None:
    """Bias-corrected Adam at step `t` without weight decay, in place:
    M <- lerp(M, G, 1 - b1), V <- b2 V + (1 - b2) G^2, P <- P - lr (M / bc1) / (sqrt(V / bc2) + eps),
    in torch's fused kernel on CPU and CUDA (torch.optim.Adam(fused=True): one pass over each
    tensor), in foreach ops elsewhere."""
    if not params:
        return
    b1, b2 = betas
    by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        by_kind.setdefault((p.device, p.dtype), []).append(i)
    for (device, _), idx in by_kind.items():
        p, g, m, v = ([xs[i] for i in idx] for xs in (params, grads, ms, vs))
        if device.type in _FUSED_ADAM_DEVICES:
            step = [torch.full((), float(t), device=device)] * len(idx)
            torch._fused_adam_(p, g, m, v, [], step, lr=lr, beta1=b1, beta2=b2, weight_decay=0.0, eps=eps,
                               amsgrad=False, maximize=False)  # fmt: skip
            continue
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        torch._foreach_lerp_(m, g, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, g, g, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(bc2))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(p, m, denom, value=-lr / bc1)


def _rotate(left: Tensor, x: Tensor, right: Tensor) -> Tensor:
    """left @ x @ right (batched) in the dtype of `left` and `right`, returned in x's dtype."""
    return torch.bmm(torch.bmm(left, x.to(left.dtype)), right).to(x.dtype)


def _orthonormal(a: Tensor) -> Tensor:
    """Q of the QR decomposition of `a` (k, d, d): Householder reflectors, then their product
    (`torch.linalg.qr(a).Q` exactly, without forming R: 0.83x its time for (2, 256, 256), 1 thread)."""
    return torch.linalg.householder_product(*torch.geqrf(a))


def _eigenvectors(mat: Tensor) -> Tensor:
    """Eigenvectors of symmetric PSD `mat` (k, d, d), by decreasing eigenvalue (float64 eigh)."""
    d = mat.shape[-1]
    jitter = 1e-30 + 1e-12 * mat.diagonal(dim1=1, dim2=2).abs().amax(-1)  # (k,)
    m = mat.double() + jitter.double()[:, None, None] * torch.eye(d, dtype=torch.float64, device=mat.device)
    return torch.linalg.eigh(m).eigenvectors.flip(-1).to(mat.dtype)
