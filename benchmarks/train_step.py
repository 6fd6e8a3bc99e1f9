"""Training-step throughput: Student-only (Adam) vs MatTA (Adam) vs MatTA (Shampoo), measured in
one run on the same batches, for several batch sizes. Prints one JSON line.

    python benchmarks/train_step.py [--preset default] [--batch-sizes 256,1024,4096] [--device cpu]

A step = forward + backward + optimizer step of the dense and embedding parameters (no data
loading: batches are read once and reused). The target of issue 5: the Shampoo step within 1.25x
of the Adam step at the default preset / batch size / precondition_frequency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from recsys_matta.data.reader import DayReader
from recsys_matta.data.synthetic import generate
from recsys_matta.models import MatTAModel
from recsys_matta.specs import load_spec
from recsys_matta.specs.config import resolve_config
from recsys_matta.train.loss import matta_loss
from recsys_matta.train.optim import ModelOptimizer

ROOT = Path(__file__).resolve().parents[1]


def _batches(spec, root: Path, batch_size: int, n: int, device) -> list:
    reader = DayReader(spec, root, batch_size)
    out = []
    for b in reader.iter_day(reader.days()[0]):
        out.append(b.to(device))
        if len(out) == n:
            break
    return out


def _time_steps(model, opt, batches, loss_cfg, warmup: int, steps: int, device) -> float:
    """Seconds per step (median of 3 rounds of `steps` steps, after `warmup` steps)."""

    def step(i: int) -> None:
        b = batches[i % len(batches)]
        s, t = model(b)
        loss = matta_loss(s, t, b.teacher, i, loss_cfg).total
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(warmup):
        step(i)
    rounds = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(steps):
            step(warmup + i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rounds.append((time.perf_counter() - t0) / steps)
    return sorted(rounds)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--batch-sizes", default="512,1024,2048,4096")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=None, help="default: precondition_frequency + 2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--overrides", nargs="*", default=[], help="run-config key=value overrides")
    args = ap.parse_args()

    device = torch.device(args.device)
    spec = load_spec(ROOT / "feature_specs" / "synthetic.yaml")
    cfg = resolve_config(overrides=[f"preset={args.preset}", *args.overrides])
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    rows = max(sizes) * 4
    data = ROOT / "benchmarks" / "_data" / f"train_step_{rows}"
    if not data.exists():
        generate(out=data, days=1, rows_per_day=rows, seed=0, start_date=date(2026, 1, 1), progress=False)
    warmup = args.warmup if args.warmup is not None else cfg.optim.precondition_frequency + 2
    # the measured window must contain eigenbasis refreshes in proportion: steps >= frequency
    steps = max(args.steps, cfg.optim.precondition_frequency)

    results = {}
    for bs in sizes:
        batches = _batches(spec, data, bs, 4, device)
        row = {}
        for name, student_only, kind, lr in (
            ("student_adam", True, "adam", 1e-3),
            ("matta_adam", False, "adam", 1e-3),
            ("matta_shampoo", False, "shampoo", cfg.optim.lr),
        ):
            torch.manual_seed(0)
            model = MatTAModel(spec, cfg.model, student_only=student_only).to(device)
            opt = ModelOptimizer(model, kind, lr, cfg.optim)
            sec = _time_steps(model, opt, batches, cfg.loss, warmup, steps, device)
            row[f"{name}_examples_per_s"] = round(bs / sec, 1)
            row[f"{name}_ms_per_step"] = round(1000 * sec, 2)
        row["matta_over_student"] = round(row["matta_adam_ms_per_step"] / row["student_adam_ms_per_step"], 3)
        row["shampoo_over_adam"] = round(row["matta_shampoo_ms_per_step"] / row["matta_adam_ms_per_step"], 3)
        results[str(bs)] = row
        print(f"batch {bs}: {row}", file=sys.stderr, flush=True)

    within = [int(b) for b, r in results.items() if r["shampoo_over_adam"] <= 1.25]
    line = {
        "benchmark": "train_step",
        "preset": args.preset,
        "device": str(device),
        "precondition_frequency": cfg.optim.precondition_frequency,
        "steps_per_round": steps,
        "results": results,
        "smallest_batch_with_shampoo_within_1.25x": min(within) if within else None,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
