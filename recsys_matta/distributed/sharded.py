"""The sharded engine: TorchRec DistributedModelParallel for the online loop (DESIGN.md section 8).

Under `torchrun` (or with `dist.sharded=always`) the trained MatTA model and the trained baseline
go into ONE `TrainStep` module (recsys_matta.train.step, the same step the local engine runs),
wrapped in ONE `DistributedModelParallel`:

    plain models (same seed on every rank -> identical weights)
      -> apply_optimizer_in_backward(RowWiseAdagrad) on every table    # FBGEMM fused row-wise Adagrad
      -> planner (constraints from `dist`) -> DMP                       # tables sharded, towers DDP
      -> copy the plain weights into the shards (`load_full_state`)     # same start as one process
    per step: TrainPipelineSparseDist.progress(batches)                 # or `run_steps` (synchronous)
      forward: TrainStep -> MatTA loss + baseline loss -> backward (tables step inside it)
      -> dense optimizers (Shampoo for MatTA, the baseline's own optimizer) step

`TrainPipelineSparseDist` fits the two-model step because both models live in one module and one
optimizer object (`StepOptimizers`) steps both; the pipeline finds the two sharded collections by
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

Checkpoints and exports are world-size independent and gathered on rank 0 only
(recsys_matta.distributed.state). A non-finite loss is detected before the backward in the
synchronous path, after the step with the pipeline (it owns backward and step); either way the
day is abandoned before its checkpoint, as in one process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad
from torchrec.streamable import Pipelineable

from recsys_matta.data.batch import Batch
from recsys_matta.distributed.context import DistContext
from recsys_matta.distributed.engine import EngineBase, Models
from recsys_matta.distributed.planning import plan_sharding
from recsys_matta.distributed.state import (
    TABLE_PREFIX,
    ShardedModelOptimizer,
    gather_model_state,
    is_main,
    load_full_state,
)
from recsys_matta.models import MatTAModel
from recsys_matta.specs.config import RunConfig
from recsys_matta.train.step import StepOptimizers, StepResult, TrainStep, check_finite, run_steps, to_floats


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


class ShardedEngine(EngineBase):
    """The trained model and baseline inside one DMP, their optimizers, and the training steps
    (the `Engine` interface of recsys_matta.distributed.engine).

    `model` / `baseline` are the same `MatTAModel` objects, their `ebc` now sharded: call them for
    evaluation (between training days). Every method that touches tables is collective.

    Args:
        models: the freshly built models (identical on every rank: same seed).
        cfg: the run config (`dist`, `optim`, `baseline.optim`, `loss`, `train.batch_size`).
        label: training label.
        ctx: rank / world size / device.
    """

    collective = True

    def __init__(self, models: Models, cfg: RunConfig, label: str, ctx: DistContext):
        ctx.ensure_group()
        self.models, self.cfg, self.ctx = models, cfg, ctx
        trained = {n: m for n, m in (("model", models.model), ("baseline", models.trained_baseline)) if m is not None}
        init = {n: m.state_dict() for n, m in trained.items()}  # the plain weights, copied in below
        tables = {n: [k for k, _ in m.named_parameters() if k.startswith(TABLE_PREFIX)] for n, m in trained.items()}
        for m in trained.values():
            adagrad = {"lr": cfg.optim.embedding_lr, "eps": cfg.optim.embedding_eps}
            if m is models.baseline:
                adagrad = {"lr": cfg.baseline.optim.embedding_lr, "eps": cfg.baseline.optim.embedding_eps}
            apply_optimizer_in_backward(RowWiseAdagrad, list(m.ebc.parameters()), adagrad)
        self.step_module = TrainStep(
            models.model, models.trained_baseline, cfg.loss, label, elastic=cfg.elastic, seed=cfg.train.seed
        )
        names = [k[len(TABLE_PREFIX) : -len(".weight")] for k in tables["model"]]
        self.plan = plan_sharding(self.step_module, names, cfg.dist, cfg.train.batch_size, ctx)
        self.dmp = DistributedModelParallel(
            self.step_module, device=ctx.device, plan=self.plan, sharders=[EmbeddingBagCollectionSharder()]
        )
        for n, m in trained.items():
            load_full_state(m, init[n])
        del init
        self.opt = ShardedModelOptimizer(models.model, cfg.optim, tables["model"])
        self.baseline_opt = (
            None
            if "baseline" not in trained
            else ShardedModelOptimizer(trained["baseline"], cfg.baseline.optim, tables["baseline"])
        )
        self.optimizers = StepOptimizers([o for o in (self.opt, self.baseline_opt) if o is not None])

    def state_dict(self) -> dict | None:
        """The checkpoint entries in the plain format (what one process saves), on rank 0;
        None on the others. Collective."""
        m, frozen = self.models, self.models.baseline_frozen
        out = {
            "model": gather_model_state(m.model),
            "optim": self.opt.gather_state_dict(),
            "baseline": None if m.baseline is None else (m.baseline.state_dict() if frozen else gather_model_state(m.baseline)),
            "baseline_optim": None if self.baseline_opt is None else self.baseline_opt.gather_state_dict(),
        }
        return out if is_main() else None

    def _load_weights(self, module: MatTAModel, state: dict) -> None:
        load_full_state(module, state)  # full tensors into this rank's shards (any world size)

    def export(self) -> tuple[MatTAModel, MatTAModel | None] | None:
        """Plain copies of (model, baseline) with the current weights, built on rank 0 only
        (the tables' shards are sent there one table at a time); None on the other ranks.
        Collective."""
        out = []
        for m in (self.models.model, self.models.trained_baseline):
            if m is None:
                out.append(None)
                continue
            state = gather_model_state(m)
            if state is None:
                continue
            plain = m.fresh(ebc_device="meta")
            plain.load_state_dict(state, assign=True)
            out.append(plain.train(m.training))
        if not is_main():
            return None
        model, baseline = out
        return model, self.models.baseline if self.models.baseline_frozen else baseline

    def sharding_table(self) -> str:
        """The plan, as TorchRec prints it."""
        return str(self.plan)

    def train(self, batches: Iterable[Batch], first_step: int, day: str) -> Iterator[StepResult]:
        """One training step per batch (every rank the same number, size-0 batches included);
        with `dist.pipeline` through a `TrainPipelineSparseDist` made for this pass and detached
        after it (so the models can be called directly again)."""
        self.dmp.train()
        self.step_module.step = first_step
        if not self.cfg.dist.pipeline:
            yield from run_steps(self.step_module, self.optimizers, batches, self.ctx.device, day, forward=self.dmp)
            return
        rows: list[int] = []

        def counted() -> Iterator[PipelineBatch]:
            for b in batches:
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
                terms = to_floats(out)
                check_finite(terms, day, first_step + done)
                yield StepResult(terms, rows[done])
                done += 1
        finally:
            pipeline.detach()

    def close(self) -> None:
        self.ctx.close()
