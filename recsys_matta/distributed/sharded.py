"""The engine: TorchRec DistributedModelParallel for the online loop, at every world size.

The trained MatTA model and the trained baseline go into ONE `TrainStep` module
(recsys_matta.train.step), wrapped in ONE `DistributedModelParallel`, under `torchrun` and in
one process alike (world size 1: a single-rank process group, no DDP):

    models, tables on the meta device (same seed on every rank -> identical dense weights)
      -> apply_optimizer_in_backward(RowWiseAdagrad) on every table    # FBGEMM fused row-wise Adagrad
      -> planner (constraints from `dist`) -> DMP                       # tables sharded, towers DDP
      -> fill each rank's shards with their initial rows (`init_tables`) # same start at any world size
    per step: TrainPipelineSparseDist.progress(batches)                 # or `run_steps` (synchronous)
      forward: TrainStep -> MatTA loss + baseline loss -> backward (tables step inside it)
      -> dense optimizers (Shampoo for MatTA, the baseline's own optimizer) step

The tables live in FBGEMM's table-batched kernels (`SplitTableBatchedEmbeddingBagsCodegen`, on
CPU and GPU) and their row-wise Adagrad is fused into the backward: a step reads and writes the
rows its batch touches, so its cost does not grow with the table (benchmarks/train_step.py
`--table-rows`). One process used to keep plain modules (a dense gradient of every row, stepped
by a Python optimizer walking all rows): 46 s vs 10 s a day at 2M rows.

`TrainPipelineSparseDist` fits the two-model step because both models live in one module and one
optimizer object (`StepOptimizers`) steps both; the pipeline finds the two sharded collections by
fx-tracing `TrainStep.forward`, which, while traced, only shows the two lookups on `batch.sparse`
(the towers are not fx-traceable and need not be: the pipeline replaces the collections' forwards
and runs the rest eagerly). The pipeline is made per day and detached after it, so evaluation
calls the models directly. `dist.pipeline=auto` uses it on GPUs only: on CPU there are no side
streams to overlap on (2 ranks x 128 rows: 148 ms/step with it, 136 without; one process: 4%
slower with it). A frozen baseline (`baseline.checkpoint`) is not trained; it stays a plain
replicated module, evaluated on each rank's shard of the day.

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
from torchrec.distributed.model_parallel import DataParallelWrapper, DistributedModelParallel
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.distributed.types import ShardingEnv
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad
from torchrec.streamable import Pipelineable

from recsys_matta.data.batch import Batch
from recsys_matta.distributed.context import DistContext
from recsys_matta.distributed.engine import Models
from recsys_matta.distributed.planning import plan_sharding
from recsys_matta.distributed.state import (
    TABLE_PREFIX,
    ShardedModelOptimizer,
    gather_model_state,
    init_tables,
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


class _NoDataParallel(DataParallelWrapper):
    """World size 1: the towers need no DDP (nothing to average; its hooks and buckets cost
    ~5% of a CPU step, measured)."""

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        pass


class ShardedEngine:
    """The trained model and baseline inside one DMP, their optimizers, and the training steps
    (the `Engine` interface of recsys_matta.distributed.engine), at any world size.

    `model` / `baseline` are the same `MatTAModel` objects, their `ebc` now sharded: call them for
    evaluation (between training days). With more than one rank every method that touches tables
    is collective.

    Args:
        models: the freshly built models (identical on every rank: same seed; trained tables on
            the meta device, filled here shard by shard).
        cfg: the run config (`dist`, `optim`, `baseline.optim`, `loss`, `train.batch_size`: global).
        label: training label.
        ctx: rank / world size / device (one process: a single-rank group is made for DMP).
    """

    def __init__(self, models: Models, cfg: RunConfig, label: str, ctx: DistContext):
        ctx.ensure_group()
        self.models, self.cfg, self.ctx = models, cfg, ctx
        self.collective = ctx.distributed
        trained = {n: m for n, m in (("model", models.model), ("baseline", models.trained_baseline)) if m is not None}
        tables = {n: [k for k, _ in m.named_parameters() if k.startswith(TABLE_PREFIX)] for n, m in trained.items()}
        for n, m in trained.items():
            o = cfg.baseline.optim if n == "baseline" else cfg.optim
            adagrad = {"lr": o.embedding_lr, "eps": o.embedding_eps}
            apply_optimizer_in_backward(RowWiseAdagrad, list(m.ebc.parameters()), adagrad)
        self.step_module = TrainStep(
            models.model, models.trained_baseline, cfg.loss, label, elastic=cfg.elastic, seed=cfg.train.seed,
            compile_tower=cfg.train.compile, precision=cfg.train.precision,
        )
        names = [k[len(TABLE_PREFIX) : -len(".weight")] for k in tables["model"]]
        self.plan = plan_sharding(self.step_module, names, cfg.dist, cfg.train.per_rank_batch(ctx.world_size), ctx)
        self.dmp = DistributedModelParallel(
            self.step_module,
            device=ctx.device,
            plan=self.plan,
            sharders=[EmbeddingBagCollectionSharder()],
            data_parallel_wrapper=None if ctx.distributed else _NoDataParallel(),
        )
        for n, m in trained.items():
            init_tables(m, models.seeds[n])
        self.opt = ShardedModelOptimizer(models.model, cfg.optim, tables["model"])
        self.baseline_opt = (
            None
            if "baseline" not in trained
            else ShardedModelOptimizer(trained["baseline"], cfg.baseline.optim, tables["baseline"])
        )
        self.optimizers = StepOptimizers([o for o in (self.opt, self.baseline_opt) if o is not None])
        self.pipeline = cfg.dist.pipeline if cfg.dist.pipeline != "auto" else ctx.device.type == "cuda"

    @property
    def model(self) -> MatTAModel:
        return self.models.model

    @property
    def baseline(self) -> MatTAModel | None:
        return self.models.baseline

    def load_state_dict(self, state: dict) -> None:
        """Load plain-format checkpoint entries, written at any world size, into this rank's
        shards (a frozen baseline keeps its own weights)."""
        load_full_state(self.models.model, state["model"])
        self.opt.load_state_dict(state["optim"])
        trained = self.models.trained_baseline
        if trained is not None and state.get("baseline") is not None:
            load_full_state(trained, state["baseline"])
            if self.baseline_opt is not None and state.get("baseline_optim") is not None:
                self.baseline_opt.load_state_dict(state["baseline_optim"])

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

    def train(self, batches: Iterable[Batch], first_step: int, day: str) -> Iterator[StepResult]:
        """One training step per batch (with several ranks every rank the same number, size-0
        batches included; in one process a batch without rows is no step); with `dist.pipeline`
        through a `TrainPipelineSparseDist` made for this pass and detached after it (so the
        models can be called directly again)."""
        self.dmp.train()
        self.step_module.step = first_step
        if not self.collective:
            batches = (b for b in batches if b.size)
        if not self.pipeline:
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
        """Nothing to release: the process group outlives the engine (a trainer that restarts
        from scratch builds its next engine in the same group)."""
