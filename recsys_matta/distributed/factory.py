"""`make_engine`: the engine of a run (the one place that picks the implementation, so that
`engine` (the interface, the models) never imports the modules implementing it)."""

from __future__ import annotations

from recsys_matta.distributed.context import DistContext
from recsys_matta.distributed.engine import Engine, build_models
from recsys_matta.distributed.sharded import ShardedEngine
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.config import RunConfig


def make_engine(spec: FeatureSpec, cfg: RunConfig, label: str, ctx: DistContext) -> Engine:
    """Fresh models in the engine (TorchRec DMP over `ctx`'s ranks, one process included)."""
    return ShardedEngine(build_models(spec, cfg, ctx.device), cfg, label, ctx)
