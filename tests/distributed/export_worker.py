"""Run under `torchrun --nproc_per_node 2` by test_sharded.py: train two steps with sharded
tables, export, and write what each rank saw to <out>/rank<r>.json."""

import json
import sys
from pathlib import Path

import torch

from recsys_matta.data.reader import DayReader
from recsys_matta.distributed.context import DistContext
from recsys_matta.distributed.factory import make_engine
from recsys_matta.models.matta import MatTAModel
from recsys_matta.specs import load_spec
from tests.tiny import SPEC_PATH, tiny_config


def main(data: str, out: str) -> None:
    ctx = DistContext.from_env("cpu")
    spec = load_spec(SPEC_PATH)
    cfg = tiny_config("train.batch_size=256", "optim.dense=adam")  # global: 128 rows per rank
    engine = make_engine(spec, cfg, "teacher", ctx)
    reader = DayReader(spec, data, cfg.train.per_rank_batch(ctx.world_size), rank=ctx.rank, world_size=ctx.world_size)
    day = reader.days()[0]
    batches = list(reader.iter_day(day))[:2]
    list(engine.train(batches, 0, day))
    built = []
    fresh = MatTAModel.fresh
    MatTAModel.fresh = lambda self, *a, **k: built.append(1) or fresh(self, *a, **k)
    exported = engine.export()
    with torch.no_grad():
        sharded = [t for t in engine.model(batches[0]) if t is not None]  # collective
        plain = [] if exported is None else [t for t in exported[0].eval()(batches[0]) if t is not None]
    diff = max((float((a - b).abs().max()) for a, b in zip(sharded, plain)), default=None)
    Path(out, f"rank{ctx.rank}.json").write_text(json.dumps({
        "exported": exported is not None, "models_built": len(built), "max_diff": diff,
        "baseline": None if exported is None else exported[1] is not None,
    }))  # fmt: skip
    engine.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
