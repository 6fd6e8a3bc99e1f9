"""The one training step: MatTA model + production baseline -> their losses
(docs/architecture.md section 6, "The loss").

    TrainStep(batch) -> (loss (1,), terms)
        choices = sample_choices(cfg, elastic, seed, step)      # elastic: sampled sub-networks
        logit_S, logit_TA, logit_c = model.forward_elastic(batch, choices)  # tables run once
        loss  = matta_loss(logit_S, logit_TA, y, step, logit_c)  # ω_S L_S + ω_TA L_TA + ramp ω_D L_D
                                                                 # + ω_E mean_c L_c
              + baseline_loss(baseline(batch), y)     # disjoint parameters: one backward gives
                                                      # each model the gradient of its own loss
    run_steps(step, optimizers, batches): forward -> finite check -> zero_grad -> backward -> step

Every path trains through this module: the local engine (`run_steps` over `TrainStep`), the
sharded engine (`TrainStep` inside TorchRec's `DistributedModelParallel`, stepped by `run_steps`
or by `TrainPipelineSparseDist`) and `benchmarks/train_step.py` (the local engine). The `(loss,
output)` return is the contract of TorchRec's train pipelines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, get_args

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from recsys_matta.data.batch import Batch
from recsys_matta.specs.config import ElasticConfig, LossConfig, Precision
from recsys_matta.train.elastic import sample_choices
from recsys_matta.train.loss import baseline_loss, matta_loss


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the day is abandoned and the last good checkpoint kept."""


@dataclass
class StepResult:
    """One training step: loss terms (floats) and the rows it trained on (this rank)."""

    terms: dict[str, float]
    rows: int


class TrainStep(nn.Module):
    """MatTA model + trained baseline; `forward(batch) -> (loss (1,), terms)` with `terms` the
    detached loss terms (`loss/total`, `loss/student`, `loss/ta`, `loss/distill`,
    `loss/distill_ramp`, `loss/elastic`, `loss/baseline`) as 0-d tensors.

    Args:
        model: the MatTA model (or the Student alone).
        baseline: the production baseline to train alongside, or None (none, or frozen).
        loss_cfg: MatTA loss weights and schedule.
        label: training label (`teacher` or `event`).
        elastic: elastic training (sampled Mix'n'Match sub-networks); None or the `endpoints`
            rule trains the Student and the TA only. Ignored by a model without sub-networks
            (Student or TA alone, `share_params=false`).
        seed: the run's seed; the sampled sub-networks depend only on (seed, step).
        compile_tower: run the shared tower through `torch.compile` (`train.compile`).
        precision: dtype of the MatTA model's forward in the step (`train.precision`): float32,
            or bfloat16 through `torch.autocast` (matmuls in bf16, norms and the loss in float32;
            weights, gradients and optimizer state stay float32). The baseline and evaluation
            stay float32.
    """

    def __init__(
        self,
        model: nn.Module,
        baseline: nn.Module | None,
        loss_cfg: LossConfig,
        label: str,
        elastic: ElasticConfig | None = None,
        seed: int = 0,
        compile_tower: bool = False,
        precision: Precision = "float32",
    ):
        super().__init__()
        self.compile_tower = compile_tower  # not `compile`: that would hide nn.Module.compile
        self.model, self.baseline = model, baseline
        self.loss_cfg, self.label = loss_cfg, label
        nested = not getattr(model, "student_only", True) and model.cfg.share_params
        self.elastic = elastic if nested and elastic is not None and elastic.rule != "endpoints" else None
        self.seed = seed
        if precision not in get_args(Precision):
            raise ValueError(f"precision must be {' or '.join(get_args(Precision))}, got {precision!r}")
        self.autocast = precision == "bfloat16"
        self.step = 0  # optimizer steps so far (the distillation ramp reads it)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if is_fx_symbolic_tracing():
            # TorchRec's pipeline traces this to find the sharded collections and their input
            # (`batch.sparse`); the real step below reaches the same collections via the models.
            return tuple(m.ebc(batch.sparse) for m in (self.model, self.baseline) if m is not None)
        y = batch.label(self.label)  # (B,)
        choices = [] if self.elastic is None else sample_choices(self.model.cfg, self.elastic, self.seed, self.step)
        # (B,), (B,) or None, [(B,)]
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logit_s, logit_ta, extra = self.model.forward_elastic(batch, choices, compiled=self.compile_tower)
        if self.autocast:  # the loss in float32
            logit_s, logit_ta, extra = _f32(logit_s), _f32(logit_ta), [_f32(x) for x in extra]
        terms = matta_loss(logit_s, logit_ta, y, self.step, self.loss_cfg, extra, self.elastic)
        total, out = terms.total, terms.detached()
        if self.baseline is not None:
            loss_b = baseline_loss(self.baseline(batch)[0], y)
            total = total + loss_b
            out["loss/baseline"] = loss_b.detach()
        self.step += 1
        return total.reshape(1), out


class Optimizer(Protocol):
    def zero_grad(self) -> None: ...

    def step(self) -> None: ...


class StepOptimizers:
    """The optimizers of every trained model, zeroed and stepped as one (TorchRec's pipeline
    takes exactly one optimizer)."""

    def __init__(self, opts: list[Optimizer]):
        self.opts = opts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.opts:
            o.zero_grad()

    def step(self, closure=None) -> None:
        for o in self.opts:
            o.step()


def _f32(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.float()


def to_floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """0-d tensors -> floats with one device sync."""
    values = torch.stack([t.detach().float().reshape(()) for t in terms.values()]).tolist()
    return dict(zip(terms, values))


def check_finite(terms: dict[str, float], day: str, step: int) -> None:
    """Raise `NonFiniteLossError` naming the day, the step and the terms."""
    if not all(math.isfinite(v) for v in terms.values()):
        shown = {k: round(v, 6) for k, v in terms.items()}
        raise NonFiniteLossError(
            f"non-finite loss on day {day} at step {step} ({shown}); the day is abandoned and "
            f"the last good checkpoint kept"
        )


def run_steps(
    step: TrainStep,
    optimizers: StepOptimizers,
    batches: Iterable[Batch],
    device: torch.device,
    day: str,
    forward: Callable[[Batch], tuple[torch.Tensor, dict[str, torch.Tensor]]] | None = None,
) -> Iterator[StepResult]:
    """One synchronous step per batch through `forward` (default `step` itself; the sharded
    engine passes the DMP that wraps it). A non-finite loss raises before its backward, so no
    weight sees it."""
    forward = forward or step
    for batch in batches:
        batch = batch.to(device, non_blocking=True)
        at = step.step
        loss, out = forward(batch)
        terms = to_floats(out)
        check_finite(terms, day, at)
        optimizers.zero_grad()
        loss.sum().backward()
        optimizers.step()
        yield StepResult(terms, batch.size)
