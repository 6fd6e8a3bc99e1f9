"""Dense optimizers: Shampoo (SOAP form) or a first-order method. The embedding tables step
with FBGEMM's fused sparse row-wise Adagrad inside the backward (recsys_matta.distributed:
sparse gradients break every Shampoo implementation).

Parameter groups are built in one place (`split_parameters`): names under the model's `ebc.`
child are embedding rows, everything else is dense.
"""

from __future__ import annotations

from typing import Iterable

import heavyball
import heavyball.utils
import torch
from torch import nn

from recsys_matta.specs.config import OptimConfig
from recsys_matta.train.shampoo import BlockSOAP, zero_grads

# heavyball compiles its update by default (11.5 s first step on CPU and recompiles later, measured
# here; docs/architecture.md section 6, "Optimizers"). Eager everywhere: the step is a handful of
# small matmuls per weight.
heavyball.utils.compile_mode = None

EMBEDDING_PREFIX = "ebc."


def fast_bf16_matmul(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices faster than float32: CUDA from compute capability
    8.0 (Ampere), CPUs with AVX512-BF16 or AMX (oneDNN emulates bf16 elsewhere, slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def low_precision_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """`optim.rotation_dtype` / `optim.factor_dtype` as BlockSOAP takes it: bfloat16, or None
    (the weights' own dtype); `auto` is bfloat16 where `fast_bf16_matmul(device)`."""
    if name == "auto":
        return torch.bfloat16 if fast_bf16_matmul(device) else None
    return {"float32": None, "bfloat16": torch.bfloat16}[name]


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(embedding parameters, dense parameters) of a model whose tables live in `model.ebc`."""
    emb, dense = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (emb if name.startswith(EMBEDDING_PREFIX) or f".{EMBEDDING_PREFIX}" in name else dense).append(p)
    return emb, dense


class Shampoo:
    """Shampoo in the SOAP form: Kronecker-factored statistics `L = Σ G Gᵀ`, `R = Σ Gᵀ G` per
    weight matrix (one matrix per nested weight: the Student block inside the TA block is
    preconditioned jointly, as long as each dim <= `max_preconditioner_dim`; larger weights are
    cut into blocks of that size), eigenbases refreshed every `precondition_frequency` steps, and
    an Adam update in that eigenbasis (Adam grafted onto Shampoo's directions; bias-corrected).
    For the first `start_preconditioning_step` steps it runs plain AdamW (the grafting method)
    in its own state; the SOAP state (factors, eigenbases, moments, bias correction) starts at
    the switch, from that step's gradient, and AdamW's moments are not carried over. (Meta's
    distributed Shampoo accumulates the factors from step 1 instead; not done here, where the
    default is 0, no warm-up.)

    `optim.shampoo_impl`: `batched` (recsys_matta.train.shampoo, the default) or `heavyball`
    (heavyball 3.2.1 `SOAP`, eager, `split=True`; the reference it was measured against).
    """

    def __init__(self, params: Iterable[nn.Parameter], cfg: OptimConfig):
        self.params = list(params)
        self.start = cfg.start_preconditioning_step
        self.impl = cfg.shampoo_impl
        common = dict(
            lr=cfg.lr, betas=cfg.betas, shampoo_beta=cfg.shampoo_beta, eps=cfg.epsilon, weight_decay=cfg.weight_decay
        )
        if self.impl == "batched":
            device = self.params[0].device if self.params else torch.device("cpu")
            self.soap: BlockSOAP | heavyball.SOAP = BlockSOAP(
                self.params, **common, frequency=cfg.precondition_frequency, max_dim=cfg.max_preconditioner_dim,
                factor_every=cfg.factor_every, rotation_dtype=low_precision_dtype(cfg.rotation_dtype, device),
                factor_dtype=low_precision_dtype(cfg.factor_dtype, device),
            )
        else:
            self.soap = heavyball.SOAP(
                self.params, **common, precondition_frequency=cfg.precondition_frequency,
                max_precond_dim=cfg.max_preconditioner_dim, split=True, use_precond_schedule=False,
            )  # fmt: skip
        self.graft = (
            torch.optim.AdamW(self.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.epsilon, weight_decay=cfg.weight_decay)
            if self.start > 0
            else None
        )
        self.steps = 0

    def step(self) -> None:
        if self.graft is not None and self.steps < self.start:
            self.graft.step()
        else:
            self.soap.step()
        self.steps += 1

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads(self.params, set_to_none)

    def state_dict(self) -> dict:
        return {
            "impl": self.impl,
            "steps": self.steps,
            "soap": self.soap.state_dict(),
            "graft": None if self.graft is None else self.graft.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        impl = state.get("impl", "heavyball")  # checkpoints before the batched implementation
        if impl != self.impl:
            raise ValueError(
                f"the checkpoint's Shampoo state is optim.shampoo_impl={impl!r}, this run uses "
                f"{self.impl!r}; resume with optim.shampoo_impl={impl}"
            )
        self.steps = state["steps"]
        self.soap.load_state_dict(state["soap"])
        if self.graft is not None and state["graft"] is not None:
            self.graft.load_state_dict(state["graft"])

    def preconditioner_factors(self, param: nn.Parameter) -> list[torch.Tensor] | None:
        """Shampoo's Kronecker factors [L (out x out), R (in x in)] of a 2-D weight's first block
        (the whole weight when it fits `max_preconditioner_dim`), or None before the first
        preconditioning step (for the paper's Figure 4 heatmap)."""
        if isinstance(self.soap, BlockSOAP):
            return self.soap.factors(param)
        state = self.soap.state.get(param)
        if not state:
            return None
        inner = state.get(0, state)  # heavyball keys per-block state by block index
        for key, value in inner.items():
            if str(key).startswith("scale_by_soap_GG") and isinstance(value, list) and value:
                return [v.reshape(v.shape[-2], v.shape[-1]).detach().clone() for v in value]
        return None


class DenseOptimizer:
    """A first-order dense optimizer (`cfg.dense`: Adam or Adagrad) with the same small interface
    as Shampoo."""

    def __init__(self, params: Iterable[nn.Parameter], cfg: OptimConfig):
        params = list(params)
        if cfg.dense == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.AdamW(
                params, lr=cfg.lr, betas=cfg.betas, eps=cfg.epsilon, weight_decay=cfg.weight_decay
            )
        elif cfg.dense == "adagrad":
            self.opt = torch.optim.Adagrad(params, lr=cfg.lr, eps=cfg.epsilon, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"unknown first-order optimizer {cfg.dense!r}; expected adam or adagrad")

    @property
    def param_groups(self) -> list[dict]:
        return self.opt.param_groups

    def step(self) -> None:
        self.opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)


def make_dense_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> Shampoo | DenseOptimizer:
    """The dense optimizer `cfg.dense` (`shampoo`, `adam`, `adagrad`)."""
    if cfg.dense == "shampoo":
        return Shampoo(params, cfg)
    return DenseOptimizer(params, cfg)
