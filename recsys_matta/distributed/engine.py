"""Engines: where the models live and how a training step runs. The trainer
(recsys_matta.online.trainer) keeps the day policy and talks to an `Engine` only:

    engine = make_engine(spec, cfg, label, ctx)     # TorchRec DMP, any world size (1 included)
    for res in engine.train(batches, first_step, day): ...   # one StepResult per step
    engine.model(batch), engine.baseline(batch)              # evaluation between days
    engine.state_dict() / engine.load_state_dict(state)      # checkpoint entries, plain format
    engine.export()                                          # plain modules, on rank 0 only

One engine for every world size (recsys_matta.distributed.sharded): the `TrainStep`
(recsys_matta.train.step) inside TorchRec's `DistributedModelParallel`, the tables in FBGEMM's
fused table-batched kernels with their sparse row-wise Adagrad (a step costs what its batch
touches, not the table size), one process being world size 1. Sharding is layered on top of
the plain modules, as in torchrec. `make_engine` lives in recsys_matta.distributed.factory, so
this interface never imports its implementation.
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
from recsys_matta.train.step import StepResult


@dataclass
class Models:
    """The models of a run, freshly built.

    Args:
        model: the trained MatTA model (or the Student alone).
        baseline: the production baseline, or None.
        baseline_frozen: the baseline was loaded from `baseline.checkpoint` and is not trained.
        seed: `train.seed` (the tables' init: `seeds`).
    """

    model: MatTAModel
    baseline: MatTAModel | None
    baseline_frozen: bool = False
    seed: int = 0

    @property
    def trained_baseline(self) -> MatTAModel | None:
        return None if self.baseline_frozen else self.baseline

    @property
    def seeds(self) -> dict[str, int]:
        """Init seed of each model's tables (`model`: `seed`, `baseline`: `seed + 1`)."""
        return {"model": self.seed, "baseline": self.seed + 1}


def _on_device(model: MatTAModel, device: torch.device) -> MatTAModel:
    """Dense weights to `device`; tables left where they are (meta until DMP places them)."""
    for name, child in model.named_children():
        if name != "ebc":
            child.to(device)
    return model


def build_models(spec: FeatureSpec, cfg: RunConfig, device: torch.device) -> Models:
    """The MatTA model (seed `train.seed`) and the baseline (seed + 1, or frozen from its
    checkpoint), identical on every rank. The trained models' tables are left on the meta
    device: the engine allocates only its shards and fills them with
    `recsys_matta.models.embedding.init_rows` (the same rows at any world size, no table built in
    full); dense weights are drawn on the CPU from the seed (the same on CPU and GPU)."""
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    model = MatTAModel(spec, cfg.model, student_only=cfg.student_only, ta_alone=cfg.ta_alone, ebc_device="meta")
    model = _on_device(model, device)
    if not cfg.baseline.enabled:
        return Models(model, None, seed=cfg.train.seed)
    torch.manual_seed(cfg.train.seed + 1)
    if not cfg.baseline.checkpoint:
        baseline = _on_device(MatTAModel(spec, cfg.model, student_only=True, ebc_device="meta"), device)
        return Models(model, baseline, seed=cfg.train.seed)
    state = load_checkpoint(Path(cfg.baseline.checkpoint))
    if state.get("baseline") is None:
        raise UserError(f"{cfg.baseline.checkpoint}: checkpoint holds no baseline model")
    baseline = MatTAModel(spec, cfg.model, student_only=True, ebc_device="meta")
    baseline.load_state_dict(state["baseline"], assign=True)
    return Models(model, baseline.to(device), baseline_frozen=True, seed=cfg.train.seed)


class Engine(Protocol):
    """What the trainer needs from the model layout (see the module docstring).

    `model` / `baseline` are callable for evaluation between training days (with sharded
    tables each rank scores its own rows; every rank must call them the same number of times).
    """

    models: Models
    collective: bool  # True: every rank must make every call (more than one rank)

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
