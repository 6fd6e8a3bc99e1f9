"""TorchRec DistributedModelParallel for the online loop (DESIGN.md section 8).

Under `torchrun` (or with `dist.sharded=always`) the trained MatTA model and the trained baseline
go into ONE `TrainStep` module, wrapped in ONE `DistributedModelParallel`:

    plain models (same seed on every rank -> identical weights)
      -> apply_optimizer_in_backward(RowWiseAdagrad) on every table    # FBGEMM fused row-wise Adagrad
      -> planner (constraints from `dist`) -> DMP                       # tables sharded, towers DDP
      -> copy the plain weights into the shards (`load_full_state`)     # same start as one process
    per step: TrainPipelineSparseDist.progress(batches)                 # or one synchronous step
      forward: TrainStep -> MatTA loss + baseline loss (disjoint parameters: one backward gives
               each model the gradients of its own loss) -> backward (tables step inside it)
      -> dense optimizers (Shampoo for MatTA, Adam/Adagrad for the baseline) step

`TrainPipelineSparseDist` fits the two-model step because both models live in one module and one
optimizer object (`_StepOptimizers`) steps both; the pipeline finds the two sharded collections by
fx-tracing `TrainStep.forward`, which, while traced, only shows the two lookups on `batch.sparse`
(the towers are not fx-traceable and need not be: the pipeline replaces the collections' forwards
and runs the rest eagerly). The pipeline is made per day and detached after it, so evaluation
calls the models directly. A frozen baseline (`baseline.checkpoint`) is not trained; it stays a
plain replicated module, evaluated on each rank's shard of the day.

One process keeps the plain modules by default (`dist.sharded=auto`): with one rank DMP adds a
process group, DDP and the pipeline and was not faster (CPU, small preset, Shampoo, 256 rows per
step, 32 steps, medians of 3 interleaved runs on a busy 2-core machine: 64 ms/step plain vs 81
through DMP; 2 ranks x 128 rows: 148 ms/step with the pipeline, 136 without: on CPU there are no
side streams to overlap on, the pipeline pays off on GPUs).

Gradient scales: dense gradients are averaged over ranks (DDP); a sharded table receives the sum
of the ranks' gradients (TorchRec's output all-to-all), i.e. `world_size` x the mean. Row-wise
Adagrad is invariant to that factor (up to eps), so the update equals one process's on the union
batch.

Checkpoints are world-size independent (recsys_matta.train.sharded_state).
A non-finite loss is detected after the step it came from (the pipeline owns backward and step);
the day is abandoned before its checkpoint, as in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.types import (
    KernelConfig,
    ParameterConstraints,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.distributed.types import ShardingPlan
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad
from torchrec.streamable import Pipelineable

from recsys_matta.data.batch import Batch
from recsys_matta.errors import UserError
from recsys_matta.models import MatTAModel
from recsys_matta.specs.config import DistConfig, LossConfig, RunConfig
from recsys_matta.train.dist import DistContext
from recsys_matta.train.loss import matta_loss
from recsys_matta.train.sharded_state import (
    TABLE_PREFIX,
    ShardedModelOptimizer,
    gather_model_state,
    is_main,
    load_full_state,
)

# ---- the batch as TorchRec's pipeline wants it ---------------------------------------------------
@dataclass
class PipelineBatch(Batch, Pipelineable):
    """`Batch` with the `Pipelineable` interface (`to`, `pin_memory`, `record_stream`) that
    `TrainPipelineSparseDist` asks of its inputs."""

    @classmethod
    def of(cls, b: Batch) -> "PipelineBatch":
        return cls(sparse=b.sparse, dense=b.dense, teacher=b.teacher, event=b.event)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "PipelineBatch":
        return PipelineBatch.of(Batch.to(self, device, non_blocking=non_blocking))

    def pin_memory(self) -> "PipelineBatch":
        return PipelineBatch.of(Batch.pin_memory(self))

    def record_stream(self, stream: torch.Stream) -> None:
        self.sparse.record_stream(stream)
        for t in (self.dense, self.teacher, self.event):
            if t is not None:
                t.record_stream(stream)


# ---- the two-model step as one module ----------------------------------------------------------
class TrainStep(nn.Module):
    """MatTA model + trained baseline; `forward(batch) -> (loss (1,), terms)` with `terms` the
    detached loss terms (`loss/total`, `loss/student`, ..., `loss/baseline`).

    Args:
        model: the MatTA model (or Student alone).
        baseline: the trained production baseline, or None.
        loss_cfg: MatTA loss weights and schedule.
        label: training label (`teacher` or `event`).
    """

    def __init__(self, model: MatTAModel, baseline: MatTAModel | None, loss_cfg: LossConfig, label: str):
        super().__init__()
        self.model, self.baseline = model, baseline
        self.loss_cfg, self.label = loss_cfg, label
        self.step = 0  # optimizer step of the next forward (the distillation ramp reads it)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if is_fx_symbolic_tracing():
            # TorchRec's pipeline traces this to find the sharded collections and their input
            # (`batch.sparse`); the real step below reaches the same collections via the models.
            return tuple(m.ebc(batch.sparse) for m in (self.model, self.baseline) if m is not None)
        y = batch.label(self.label)
        logit_s, logit_ta = self.model(batch)
        terms = matta_loss(logit_s, logit_ta, y, self.step, self.loss_cfg)
        total = terms.total
        out = {"loss/total": total.detach(), "loss/student": terms.student}
        if terms.ta is not None:
            out["loss/ta"] = terms.ta
        if terms.distill is not None:
            out["loss/distill"] = terms.distill
            out["loss/distill_ramp"] = torch.tensor(terms.ramp)
        if self.baseline is not None:
            logit_b, _ = self.baseline(batch)
            loss_b = F.binary_cross_entropy_with_logits(logit_b, y)
            total = total + loss_b
            out["loss/baseline"] = loss_b.detach()
        self.step += 1
        return total.reshape(1), out


# ---- planning ----------------------------------------------------------------------------------
def table_constraints(tables: list[str], cfg: DistConfig) -> dict[str, ParameterConstraints]:
    """Planner constraints per table: the `dist` defaults, overridden per table."""
    unknown = sorted(set(cfg.tables) - set(tables))
    if unknown:
        raise UserError(f"dist.tables: unknown tables {unknown}; the model's tables are {tables}")
    out = {}
    for t in tables:
        over = cfg.tables.get(t)
        out[t] = ParameterConstraints(
            sharding_types=list((over.sharding_types if over else None) or cfg.sharding_types),
            compute_kernels=["fused"],  # FBGEMM with the row-wise Adagrad applied in backward
            min_partition=over.min_partition if over else None,
        )
    return out


def plan_sharding(
    module: nn.Module, tables: list[str], cfg: DistConfig, batch_size: int, ctx: DistContext
) -> ShardingPlan:
    """TorchRec's planner on rank 0, the plan broadcast to every rank."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(ctx.world_size)))
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=ctx.world_size, local_world_size=local),
        kernel_config=KernelConfig(compute_device=ctx.device.type),
    )
    planner = EmbeddingShardingPlanner(
        topology=topology, batch_size=batch_size, constraints=table_constraints(tables, cfg)
    )
    return planner.collective_plan(module, [EmbeddingBagCollectionSharder()], dist.GroupMember.WORLD)


class _StepOptimizers:
    """Both models' optimizers as the one optimizer `TrainPipelineSparseDist` steps."""

    def __init__(self, opts: list[ShardedModelOptimizer]):
        self.opts = opts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.opts:
            o.zero_grad()

    def step(self, closure=None) -> None:
        for o in self.opts:
            o.step()


# ---- the sharded run ---------------------------------------------------------------------------
@dataclass
class StepResult:
    """One training step: loss terms (floats) and the rows it trained on (this rank)."""

    terms: dict[str, float]
    rows: int


class ShardedModels:
    """The trained model and baseline inside one DMP, their optimizers, and the training steps.

    `model` / `baseline` are the same `MatTAModel` objects, their `ebc` now sharded: call them for
    evaluation (between training days). Every method that touches tables is collective.

    Args:
        model: the freshly built MatTA model (identical on every rank: same seed).
        baseline: the freshly built baseline to train alongside, or None.
        cfg: the run config (`dist`, `optim`, `baseline`, `loss`, `train.batch_size`).
        label: training label.
        ctx: rank / world size / device.
    """

    def __init__(self, model: MatTAModel, baseline: MatTAModel | None, cfg: RunConfig, label: str, ctx: DistContext):
        ctx.ensure_group()
        self.cfg, self.ctx = cfg, ctx
        models = {n: m for n, m in (("model", model), ("baseline", baseline)) if m is not None}
        init = {n: m.state_dict() for n, m in models.items()}  # the plain weights, copied in below
        tables = {n: [k for k, _ in m.named_parameters() if k.startswith(TABLE_PREFIX)] for n, m in models.items()}
        adagrad = {"lr": cfg.optim.embedding_lr, "eps": cfg.optim.embedding_eps}
        for m in models.values():
            apply_optimizer_in_backward(RowWiseAdagrad, list(m.ebc.parameters()), adagrad)
        self.step_module = TrainStep(model, baseline, cfg.loss, label)
        names = [k[len(TABLE_PREFIX) : -len(".weight")] for k in tables["model"]]
        self.plan = plan_sharding(self.step_module, names, cfg.dist, cfg.train.batch_size, ctx)
        self.dmp = DistributedModelParallel(
            self.step_module, device=ctx.device, plan=self.plan, sharders=[EmbeddingBagCollectionSharder()]
        )
        self.model, self.baseline = model, baseline
        for n, m in models.items():
            load_full_state(m, init[n])
        del init
        self.opt = ShardedModelOptimizer(model, cfg.optim.dense, cfg.optim.lr, cfg.optim, tables["model"])
        self.baseline_opt = (
            None
            if baseline is None
            else ShardedModelOptimizer(baseline, cfg.baseline.optimizer, cfg.baseline.lr, cfg.optim, tables["baseline"])
        )
        self.optimizers = _StepOptimizers([o for o in (self.opt, self.baseline_opt) if o is not None])

    def gather_state(self) -> dict | None:
        """The checkpoint entries `model`, `optim`, `baseline`, `baseline_optim` in the plain
        format (what one process saves), on rank 0; None on the others. Collective."""
        out = {
            "model": gather_model_state(self.model),
            "optim": self.opt.gather_state_dict(),
            "baseline": None if self.baseline is None else gather_model_state(self.baseline),
            "baseline_optim": None if self.baseline_opt is None else self.baseline_opt.gather_state_dict(),
        }
        return out if is_main() else None

    def load_state(self, state: dict) -> None:
        """Load plain-format checkpoint entries (written with any world size)."""
        load_full_state(self.model, state["model"])
        self.opt.load_state_dict(state["optim"])
        if self.baseline is not None and state.get("baseline") is not None:
            load_full_state(self.baseline, state["baseline"])
            if self.baseline_opt is not None and state.get("baseline_optim") is not None:
                self.baseline_opt.load_state_dict(state["baseline_optim"])

    def plain_models(self) -> tuple[MatTAModel, MatTAModel | None]:
        """Unsharded copies of (model, baseline) with the current weights, on every rank.
        Collective; each rank holds one full copy."""
        out = []
        for m in (self.model, self.baseline):
            if m is None:
                out.append(None)
                continue
            plain = MatTAModel(m.spec, m.cfg, student_only=m.student_only).to(self.ctx.device)
            plain.load_state_dict(gather_model_state(m, everywhere=True))
            out.append(plain.train(m.training))
        return out[0], out[1]

    def sharding_table(self) -> str:
        """The plan, as TorchRec prints it."""
        return str(self.plan)

    def train(self, batches: Iterable[Batch], first_step: int) -> Iterator[StepResult]:
        """One training step per batch (every rank the same number); yields each step's terms.
        With `dist.pipeline` through a `TrainPipelineSparseDist` made for this pass and detached
        after it (so the models can be called directly again)."""
        self.dmp.train()
        self.step_module.step = first_step
        it = iter(batches)
        if not self.cfg.dist.pipeline:
            for batch in it:
                batch = batch.to(self.ctx.device, non_blocking=True)
                self.optimizers.zero_grad()
                loss, out = self.dmp(batch)
                loss.sum().backward()
                self.optimizers.step()
                yield StepResult({k: float(v) for k, v in out.items()}, batch.size)
            return
        rows: list[int] = []

        def counted() -> Iterator[Batch]:
            for b in it:
                rows.append(b.size)
                yield PipelineBatch.of(b)

        pipeline = TrainPipelineSparseDist(self.dmp, self.optimizers, self.ctx.device)  # type: ignore[arg-type]
        src = counted()
        done = 0
        try:
            while True:
                try:
                    out = pipeline.progress(src)
                except StopIteration:
                    break
                yield StepResult({k: float(v) for k, v in out.items()}, rows[done])
                done += 1
        finally:
            pipeline.detach()

