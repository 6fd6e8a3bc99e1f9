"""Engines: where the models live and how a training step runs. The trainer
(recsys_matta.train.trainer) keeps the day policy and talks to an `Engine` only:

    engine = make_engine(spec, cfg, label, ctx)     # LocalEngine, or ShardedEngine (DMP)
    for res in engine.train(batches, first_step, day): ...   # one StepResult per step
    engine.model(batch), engine.baseline(batch)              # evaluation between days
    engine.state_dict() / engine.load_state_dict(state)      # checkpoint entries, plain format
    engine.export()                                          # plain modules, on rank 0 only

Both run the same `TrainStep` (recsys_matta.train.step). The local engine keeps the plain
modules; the sharded one (recsys_matta.distributed.sharded) puts the same `TrainStep` into
TorchRec's `DistributedModelParallel`, as torchrec layers sharding on top of plain modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from recsys_matta.data.batch import Batch
from recsys_matta.distributed.context import DistContext
from recsys_matta.errors import UserError
from recsys_matta.models import MatTAModel
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.config import RunConfig
from recsys_matta.train.checkpoint import load_checkpoint
from recsys_matta.train.optim import ModelOptimizer
from recsys_matta.train.step import StepOptimizers, StepResult, TrainStep, run_steps

CHECKPOINT_KEYS = ("model", "optim", "baseline", "baseline_optim")


@dataclass
class Models:
    """The models of a run, freshly built.

    Args:
        model: the trained MatTA model (or the Student alone).
        baseline: the production baseline, or None.
        baseline_frozen: the baseline was loaded from `baseline.checkpoint` and is not trained.
    """

    model: MatTAModel
    baseline: MatTAModel | None
    baseline_frozen: bool = False

    @property
    def trained_baseline(self) -> MatTAModel | None:
        return None if self.baseline_frozen else self.baseline


def build_models(spec: FeatureSpec, cfg: RunConfig, device: torch.device) -> Models:
    """The MatTA model (seed `train.seed`) and the baseline (seed + 1, or frozen from its
    checkpoint), identical on every rank."""
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    model = MatTAModel(spec, cfg.model, student_only=cfg.student_only, ta_alone=cfg.ta_alone).to(device)
    if not cfg.baseline.enabled:
        return Models(model, None)
    torch.manual_seed(cfg.train.seed + 1)
    baseline = MatTAModel(spec, cfg.model, student_only=True).to(device)
    if not cfg.baseline.checkpoint:
        return Models(model, baseline)
    state = load_checkpoint(Path(cfg.baseline.checkpoint))
    if state.get("baseline") is None:
        raise UserError(f"{cfg.baseline.checkpoint}: checkpoint holds no baseline model")
    baseline.load_state_dict(state["baseline"])
    return Models(model, baseline, baseline_frozen=True)


class Engine(Protocol):
    """What the trainer needs from the model layout (see the module docstring).

    `model` / `baseline` are callable for evaluation between training days (with sharded
    tables each rank scores its own rows; every rank must call them the same number of times).
    """

    models: Models
    collective: bool  # True: every rank must make every call (sharded tables)

    @property
    def model(self) -> MatTAModel: ...

    @property
    def baseline(self) -> MatTAModel | None: ...

    def train(self, batches: Iterable[Batch], first_step: int, day: str) -> Iterator[StepResult]:
        """One training step per batch; raises `NonFiniteLossError` on a NaN/inf loss."""
        ...

    def state_dict(self) -> dict | None:
        """`CHECKPOINT_KEYS` in the plain format on rank 0 (None elsewhere). Collective."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Load plain-format checkpoint entries (written with any world size)."""
        ...

    def export(self) -> tuple[MatTAModel, MatTAModel | None] | None:
        """Plain (model, baseline) with the current weights on rank 0, None elsewhere.
        Collective; only rank 0 ever holds a full copy."""
        ...

    def close(self) -> None: ...


class EngineBase:
    """What both engines share: the models, the two optimizers, loading checkpoint entries."""

    models: Models
    opt: ModelOptimizer
    baseline_opt: ModelOptimizer | None

    @property
    def model(self) -> MatTAModel:
        return self.models.model

    @property
    def baseline(self) -> MatTAModel | None:
        return self.models.baseline

    def _load_weights(self, module: MatTAModel, state: dict) -> None:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        """Load plain-format checkpoint entries (a frozen baseline keeps its own weights)."""
        self._load_weights(self.models.model, state["model"])
        self.opt.load_state_dict(state["optim"])
        trained = self.models.trained_baseline
        if trained is not None and state.get("baseline") is not None:
            self._load_weights(trained, state["baseline"])
            if self.baseline_opt is not None and state.get("baseline_optim") is not None:
                self.baseline_opt.load_state_dict(state["baseline_optim"])

    def close(self) -> None:
        pass


class LocalEngine(EngineBase):
    """The plain modules in this process (CPU or one GPU).

    Args:
        models: the run's models.
        cfg: the run config (`loss`, `optim`, `baseline.optim`).
        label: training label.
        device: where the models live.
    """

    collective = False

    def __init__(self, models: Models, cfg: RunConfig, label: str, device: torch.device):
        self.models, self.device = models, device
        self.step_module = TrainStep(
            models.model, models.trained_baseline, cfg.loss, label, elastic=cfg.elastic, seed=cfg.train.seed
        )
        self.opt = ModelOptimizer(models.model, cfg.optim)
        trained = models.trained_baseline
        self.baseline_opt = None if trained is None else ModelOptimizer(trained, cfg.baseline.optim)
        self.optimizers = StepOptimizers([o for o in (self.opt, self.baseline_opt) if o is not None])

    def train(self, batches: Iterable[Batch], first_step: int, day: str) -> Iterator[StepResult]:
        """Size-0 batches (every row had an invalid label) are skipped: the EBC rejects stride 0."""
        self.step_module.train()
        self.step_module.step = first_step
        yield from run_steps(self.step_module, self.optimizers, (b for b in batches if b.size), self.device, day)

    def state_dict(self) -> dict:
        m = self.models
        return {
            "model": m.model.state_dict(),
            "optim": self.opt.state_dict(),
            "baseline": None if m.baseline is None else m.baseline.state_dict(),
            "baseline_optim": None if self.baseline_opt is None else self.baseline_opt.state_dict(),
        }

    def _load_weights(self, module: MatTAModel, state: dict) -> None:
        module.load_state_dict(state)

    def export(self) -> tuple[MatTAModel, MatTAModel | None]:
        return self.models.model, self.models.baseline


def make_engine(spec: FeatureSpec, cfg: RunConfig, label: str, ctx: DistContext) -> Engine:
    """Fresh models in the engine the run asks for: TorchRec DMP under torchrun (or with
    `dist.sharded=always`), else the local engine."""
    models = build_models(spec, cfg, ctx.device)
    if cfg.dist.sharded == "always" or ctx.distributed:
        from recsys_matta.distributed.sharded import ShardedEngine

        return ShardedEngine(models, cfg, label, ctx)
    return LocalEngine(models, cfg, label, ctx.device)
