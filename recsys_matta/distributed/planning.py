"""TorchRec's sharding planner with the run's constraints (`dist` in the run config)."""

from __future__ import annotations

import os

import torch.distributed as dist
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.types import (
    KernelConfig,
    ParameterConstraints,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ShardingPlan

from recsys_matta.distributed.context import DistContext
from recsys_matta.errors import UserError
from recsys_matta.specs.config import DistConfig


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
    """TorchRec's planner on rank 0, the plan broadcast to every rank. `batch_size`: rows per
    step on each rank (the planner's batch is per rank; it scales by the world size itself)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(ctx.world_size)))
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=ctx.world_size, local_world_size=local),
        kernel_config=KernelConfig(compute_device=ctx.device.type),
    )
    planner = EmbeddingShardingPlanner(
        topology=topology, batch_size=batch_size, constraints=table_constraints(tables, cfg)
    )
    return planner.collective_plan(module, [EmbeddingBagCollectionSharder()], dist.GroupMember.WORLD)
