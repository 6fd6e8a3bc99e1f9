"""torch.compile of the shared tower: forward + backward of the sub-networks one training step
runs (the Student and the TA, plus one wide-narrow-wide sub-network per `--elastic-k`), eager vs
`torch.compile`, on the same inputs, in interleaved rounds. Prints one JSON line.

    python benchmarks/compile_towers.py [--batch-sizes 256,1024] [--elastic-k 2] [--rounds 5]

What it answers (issue 17: "try torch.compile of the towers, keep it only where it is measured
faster"): per batch size and per set of sub-networks, `compiled_over_eager` (steady-state step
time ratio; below 1 = compiled faster), `compile_s` (seconds of the first two compiled calls: one
compile per distinct set of sub-network widths, so an elastic run compiles once per sampled
size), the tower's matmul FLOPs per step (torch.utils.flop_counter) and the FLOP/s of both
against a 2048^3 fp32 matmul in the same run and thread count. The tables, the loss terms and
the optimizer are not in it (benchmarks/train_step.py times the whole step).

Measured (2 shared CPU cores, 1 thread, load 1.5 -> 2.5 with the test suite beside it; default
preset; fp32 matmul 94.3 GFLOP/s): compiled / eager = 0.787 (Student + TA) and 0.718 (+ K2) at
batch 256, 0.836 and 0.753 at 1024; tower FLOP/s vs the matmul 0.34-0.42 eager, 0.47-0.53
compiled; 30-37 s to compile each new set of widths or batch shape (3.7 s from the on-disk cache).
Not in the training step yet: an elastic step samples a new sub-network size most steps (one
compile each) and the tables, loss and optimizer around the tower are not compiled.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.train_step import matmul_peak  # noqa: E402
from recsys_matta.models.choice import wide_narrow_wide  # noqa: E402
from recsys_matta.models.tower import Tower  # noqa: E402
from recsys_matta.specs import load_spec  # noqa: E402
from recsys_matta.specs.config import resolve_config  # noqa: E402


def _step(fn, pooled: torch.Tensor, dense: torch.Tensor, y: torch.Tensor) -> None:
    """One forward + backward through `fn(pooled, dense) -> [logits (B,)]`."""
    p = pooled.clone().requires_grad_(True)  # (B, F, d_ta): the tables' output
    loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(o, y) for o in fn(p, dense))
    loss.backward()


def _time(fn, args, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(fn, *args)
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--batch-sizes", default="256,1024")
    ap.add_argument("--elastic-k", default="2", help="wide-narrow-wide K per extra arm, comma-separated; empty: none")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="steps per round and arm")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    spec = load_spec(ROOT / "feature_specs" / "synthetic.yaml")
    cfg = resolve_config(None, [f"preset={args.preset}"]).model
    f, d = len(spec.sparse), len(spec.dense)
    torch.manual_seed(0)
    tower = Tower(f, d, cfg, fan=cfg.ta_init)
    sets = {"student_ta": [cfg.student(), cfg.ta()]}
    for k in [int(x) for x in args.elastic_k.split(",") if x]:
        sets[f"student_ta_k{k}"] = [cfg.student(), cfg.ta(), wide_narrow_wide(cfg, k).widths(cfg)]
    results: dict[str, dict] = {}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        inputs = (torch.randn(bs, f, cfg.d_model[1]), torch.randn(bs, d), torch.rand(bs))
        for name, ws in sets.items():
            eager = lambda p, x, ws=ws: tower.forward_many(p, x, ws)  # noqa: E731
            compiled = torch.compile(eager)
            t0 = time.perf_counter()
            _step(compiled, *inputs)
            _step(compiled, *inputs)
            compile_s = time.perf_counter() - t0
            times: dict[str, list[float]] = {"eager": [], "compiled": []}
            for _ in range(args.rounds):
                for arm, fn in (("eager", eager), ("compiled", compiled)):
                    times[arm].append(_time(fn, inputs, args.steps))
            with FlopCounterMode(display=False) as counter:
                _step(eager, *inputs)
            flops = counter.get_total_flops()
            e, c = (sorted(times[a])[len(times[a]) // 2] for a in ("eager", "compiled"))  # medians
            results[f"{bs}/{name}"] = {
                "eager_ms_per_step": round(e, 2),
                "compiled_ms_per_step": round(c, 2),
                "compiled_over_eager": round(c / e, 3),
                "compile_s": round(compile_s, 1),
                "tower_gflop_per_step": round(flops / 1e9, 3),
                "eager_gflop_per_s": round(flops / e / 1e6, 1),
                "compiled_gflop_per_s": round(flops / c / 1e6, 1),
            }
            print(name, bs, results[f"{bs}/{name}"], file=sys.stderr, flush=True)
    peak = matmul_peak(torch.device("cpu"))
    for r in results.values():
        for arm in ("eager", "compiled"):
            r[f"{arm}_vs_matmul"] = round(r[f"{arm}_gflop_per_s"] * 1e9 / peak, 3)
    print(json.dumps({
        "benchmark": "compile_towers",
        "preset": args.preset,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "results": results,
        "matmul_fp32_gflop_per_s": round(peak / 1e9, 1),
        "machine": {
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_1m_start": round(load_start, 2),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
    }))  # fmt: skip


if __name__ == "__main__":
    main()
