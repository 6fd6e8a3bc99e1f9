"""Throughput of the production training step (the engine's `train`: the one `TrainStep` in
TorchRec DMP with FBGEMM's fused tables, what the trainer runs; one process = world size 1),
measured in one run on the same batches, for several batch sizes, and a table-size sweep.
Prints one JSON line.

    python benchmarks/train_step.py [--preset default] [--batch-sizes 256,1024,4096] [--device cpu]
        [--table-rows 50000,2000000,20000000] [--sweep-arm matta_shampoo] [--sweep-batch 256]

Arms (no production baseline inside the step, so each arm times exactly one model):
    student_adam      the Student alone, Adam            (the production baseline's step)
    student_shampoo   the Student alone, Shampoo
    ta_alone_shampoo  the TA architecture alone, Shampoo
    matta_adam        MatTA (Student + TA + distillation, two-endpoint rule), Adam
    matta_shampoo     MatTA, two-endpoint rule, Shampoo
    matta_elastic     MatTA, the shipped elastic rule (Student + TA + sampled sub-networks), Shampoo
Reported per batch size: examples/s and ms/step of each, `shampoo_over_adam` = MatTA+Shampoo /
MatTA+Adam step time, `elastic_over_matta` = MatTA elastic / MatTA two-endpoint (Shampoo both),
and `matta_over_parts` = MatTA+Shampoo / (Student + TA-alone, Shampoo):
below 1 means one MatTA step is cheaper than training the two models separately.

`--variant NAME=K=V,K=V` adds a MatTA+Shampoo arm with those overrides (`NAME_over_adam`), timed
in the same interleaved rounds. FLOPs (`--flops`, on by default): `model_flops_per_example` (one
MatTA+Adam step's matmul FLOPs by torch.utils.flop_counter, forward + backward of both towers, per
example) and per arm `ARM_model_flops_vs_matmul` = those FLOPs / its step time / the FLOP/s of a
2048^3 fp32 matmul measured in the same run (`matmul_fp32_gflop_per_s`, same threads).

Measured (issue 17; docs/tuning.md, 1 thread, load 0.44 -> 0.90): shampoo_over_adam 1.350 at
batch 256 and 1.086 at 1024 with the defaults (`optim.rotation_dtype=auto optim.factor_dtype=auto`:
bf16 on this AVX512-BF16 CPU) vs 1.499 and 1.155 with both float32 (`--variant
fp32=optim.rotation_dtype=float32,optim.factor_dtype=float32`) in the same run; 3.21 MFLOP per
example. On an AVX2 CPU (no fast bf16: `auto` = float32; `machine.cpu_capability`,
`shampoo_dtypes`): 1.394 / 1.375 at 256 and 1.130 / 1.134 at 1024 (two runs, load 0.3 -> 0.9),
1.493 and 1.111 in a later run (run N, load 0.1 -> 0.9; docs/tuning.md).
On an Intel CPU with AMX (bf16 default): 1.260 / 1.255 at 256 and 1.077 / 1.049 at 1024 (two
runs, load 0.5 -> 1.0); there `--variant bf16=train.precision=bfloat16` (the model's forward
under autocast) took 0.943x the default step at 256 and 0.820x at 1024.
Back on the AVX512-BF16 AMD CPU with the later Shampoo changes: 1.208 at 256 and 1.091 at 1024 (run J,
load 0.4 -> 1.0; docs/tuning.md).
`--variant compiled=train.compile=true` times the step with the tower under torch.compile (its
compiles fall in the warm-up): 0.81-0.91x the eager Shampoo step at batch 256, 0.90-1.05x at 1024
(two runs, load 0.1-1.1; docs/tuning.md).

Table sweep (`--table-rows`, empty to skip): the `--sweep-arm` step at `--sweep-batch` with
user_id and item_id given each number of rows (hash buckets), the engines of all sizes timed in
interleaved rounds; reported per size: ms/step, `step_over_first` (this size's step / the first
size's: flat = 1) and the memory of the tables (weights + row-wise Adagrad state, MiB).
Measured (2 shared CPU cores, 1 thread, load ~0.8; matta_shampoo, batch 256): 38.2 ms/step at
50k rows (12.6 MiB of tables), 36.5 at 2M (504 MiB), 38.4 at 20M (5035 MiB): 1.005x the 50k step.

A step = forward + backward + optimizer step of the dense and embedding parameters (no data
loading: batches are read once and reused). The timed window is a whole number of Shampoo
preconditioner refreshes (`precondition_frequency` steps per round), median of `--rounds`
rounds that interleave the arms (load from other processes falls on all arms alike).
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
from torch.utils.flop_counter import FlopCounterMode

from recsys_matta.data.reader import DayReader
from recsys_matta.data.synthetic import generate
from recsys_matta.distributed.context import DistContext
from recsys_matta.distributed.engine import Engine
from recsys_matta.distributed.factory import make_engine
from recsys_matta.models.embedding import table_configs
from recsys_matta.specs import FeatureSpec, load_spec
from recsys_matta.specs.config import resolve_config
from recsys_matta.train.optim import fast_bf16_matmul, low_precision_dtype

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "student_adam": ("student_only=true", "optim.dense=adam", "optim.lr=1e-3"),
    "student_shampoo": ("student_only=true", "optim.dense=shampoo"),
    "ta_alone_shampoo": ("ta_alone=true", "optim.dense=shampoo"),
    "matta_adam": ("optim.dense=adam", "optim.lr=1e-3", "elastic.rule=endpoints"),
    "matta_shampoo": ("optim.dense=shampoo", "elastic.rule=endpoints"),
    "matta_elastic": ("optim.dense=shampoo",),
}


def _batches(spec, root: Path, batch_size: int, n: int) -> list:
    reader = DayReader(spec, root, batch_size)
    out = []
    for b in reader.iter_day(reader.days()[0]):
        out.append(b)
        if len(out) == n:
            break
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


ID_TABLES = ("user_id", "item_id")


def with_table_rows(spec: FeatureSpec, rows: int) -> FeatureSpec:
    """`spec` with `rows` hash buckets for user_id and item_id."""
    feats = [f.model_copy(update={"hash_buckets": rows}) if f.name in ID_TABLES else f for f in spec.features]
    return spec.model_copy(update={"features": feats})


def table_mib(engine: Engine) -> dict[str, float]:
    """MiB of the trained tables (fp32 weights + one row-wise Adagrad float per row): all
    tables, and user_id + item_id."""
    out = {"tables_mib": 0.0, "id_tables_mib": 0.0}
    for m in (engine.models.model, engine.models.trained_baseline):
        for cfg in [] if m is None else table_configs(m.spec, m.embedding_dim, m.cfg.pooling):
            mib = cfg.num_embeddings * (cfg.embedding_dim + 1) * 4 / 2**20
            out["tables_mib"] += mib
            out["id_tables_mib"] += mib if cfg.name in ID_TABLES else 0.0
    return {k: round(v, 1) for k, v in out.items()}


def time_steps(
    engines: dict[str, Engine], batches: list | dict[str, list], warmup: int, steps: int, rounds: int
) -> dict[str, float]:
    """Seconds per production step of each engine: median over `rounds` rounds of `steps` steps,
    after `warmup` steps. The rounds interleave the engines (round 1: every engine, round 2: ...),
    so load from other processes on a shared machine falls on all of them alike. `batches`: one
    list for every engine, or one per engine."""
    feeds = {}
    for name, engine in engines.items():
        mine = batches[name] if isinstance(batches, dict) else batches
        feeds[name] = [b.to(engine.ctx.device) for b in mine]

    def run(name: str, n: int, first: int) -> None:
        data = feeds[name]
        for _ in engines[name].train((data[(first + i) % len(data)] for i in range(n)), first, "benchmark"):
            pass

    for name in engines:
        run(name, warmup, 0)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for r in range(rounds):
        for name, engine in engines.items():
            _sync(engine.ctx.device)
            t0 = time.perf_counter()
            run(name, steps, warmup + r * steps)
            _sync(engine.ctx.device)
            times[name].append((time.perf_counter() - t0) / steps)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def count_flops(engine: Engine, batch) -> int:
    """Matmul FLOPs (torch.utils.flop_counter: mm/bmm/addmm, forward + backward; the embedding
    lookups count none) of one production step of `engine` on `batch`."""
    batch = batch.to(engine.ctx.device)
    with FlopCounterMode(display=False) as counter:
        for _ in engine.train(iter([batch]), 0, "flops"):
            pass
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of a large fp32 matmul (n x n @ n x n, best of `reps`) on this device and thread
    count: the roofline the step's FLOP/s are compared with."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def parse_variants(items: list[str]) -> dict[str, tuple[str, ...]]:
    """`NAME=key=value,key=value` -> {NAME: matta_shampoo's overrides + those}."""
    out = {}
    for item in items:
        name, _, rest = item.partition("=")
        if not name or not rest or name in ARMS:
            raise SystemExit(f"--variant {item!r}: expected NAME=key=value[,key=value] with a new NAME")
        out[name] = (*ARMS["matta_shampoo"], *rest.split(","))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--batch-sizes", default="256,1024,4096")
    ap.add_argument("--steps", type=int, default=None, help="steps per round (default: precondition_frequency)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=None, help="default: precondition_frequency + 2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--overrides", nargs="*", default=[], help="run-config key=value overrides for every arm")
    ap.add_argument("--table-rows", default="50000,2000000,20000000", help="table sweep: user_id/item_id rows ('' = none)")
    ap.add_argument("--sweep-arm", default="matta_shampoo")
    ap.add_argument("--sweep-batch", type=int, default=256)
    ap.add_argument(
        "--variant", action="append", default=[], metavar="NAME=K=V[,K=V]",
        help="an extra MatTA+Shampoo arm with these overrides, timed interleaved with the others "
        "(reported as NAME_ms_per_step and NAME_over_adam)",
    )  # fmt: skip
    ap.add_argument("--flops", action=argparse.BooleanOptionalAction, default=True, help="count FLOPs per example")
    args = ap.parse_args()

    device = torch.device(args.device)
    ctx = DistContext(device=device)
    load_start = round(os.getloadavg()[0], 2)
    spec = load_spec(ROOT / "feature_specs" / "synthetic.yaml")
    base = [f"preset={args.preset}", "baseline.enabled=false", f"train.device={args.device}", *args.overrides]
    cfg0 = resolve_config(overrides=base)
    freq = cfg0.optim.precondition_frequency
    steps = args.steps or freq
    warmup = args.warmup if args.warmup is not None else freq + 2
    sizes = [int(s) for s in args.batch_sizes.split(",") if s]
    variants = parse_variants(args.variant)
    arm_overrides = {**ARMS, **variants}
    arms = [a for a in args.arms.split(",") if a] + list(variants)
    peak = matmul_peak(device) if args.flops else None
    rows = max([*sizes, args.sweep_batch]) * 4
    data = ROOT / "benchmarks" / "_data" / f"train_step_{rows}"
    if not data.exists():
        generate(out=data, days=1, rows_per_day=rows, seed=0, start_date=date(2026, 1, 1), progress=False)

    results = {}
    for bs in sizes:
        batches = _batches(spec, data, bs, 4)
        engines = {}
        for name in arms:
            cfg = resolve_config(overrides=[*base, *arm_overrides[name]])
            engines[name] = make_engine(spec, cfg, cfg.loss.label, ctx)
        row: dict = {}
        secs = time_steps(engines, batches, warmup, steps, args.rounds)
        for name, sec in secs.items():
            row[f"{name}_examples_per_s"] = round(bs / sec, 1)
            row[f"{name}_ms_per_step"] = round(1000 * sec, 3)
        ms = {n: row.get(f"{n}_ms_per_step") for n in arm_overrides}
        if ms["matta_shampoo"] and ms["matta_adam"]:
            row["shampoo_over_adam"] = round(ms["matta_shampoo"] / ms["matta_adam"], 3)
        for name in variants:
            if ms["matta_adam"]:
                row[f"{name}_over_adam"] = round(ms[name] / ms["matta_adam"], 3)
        if peak and "matta_adam" in engines:
            # the model's FLOPs: the Adam arm's step (AdamW has no matmuls); an arm's achieved
            # model FLOP/s = those / its step time (Shampoo's own matmuls are overhead there)
            model = count_flops(engines["matta_adam"], batches[0])
            row["model_flops_per_example"] = round(model / bs)
            for name in engines:
                achieved = model / secs[name]
                row[f"{name}_model_gflop_per_s"] = round(achieved / 1e9, 2)
                row[f"{name}_model_flops_vs_matmul"] = round(achieved / peak, 3)
        if ms["matta_elastic"] and ms["matta_shampoo"]:
            row["elastic_over_matta"] = round(ms["matta_elastic"] / ms["matta_shampoo"], 3)
        if ms["matta_shampoo"] and ms["student_shampoo"] and ms["ta_alone_shampoo"]:
            row["matta_over_parts"] = round(ms["matta_shampoo"] / (ms["student_shampoo"] + ms["ta_alone_shampoo"]), 3)
        results[str(bs)] = row
        print(f"batch {bs}: {row}", file=sys.stderr, flush=True)
        del engines

    sweep: dict = {}
    table_rows = [int(s) for s in args.table_rows.split(",") if s]
    if table_rows:
        cfg = resolve_config(overrides=[*base, *ARMS[args.sweep_arm]])
        engines, feeds = {}, {}
        for n in table_rows:
            spec_n = with_table_rows(spec, n)
            engines[str(n)] = make_engine(spec_n, cfg, cfg.loss.label, ctx)
            feeds[str(n)] = _batches(spec_n, data, args.sweep_batch, 4)
        secs = time_steps(engines, feeds, warmup, steps, args.rounds)
        first = secs[str(table_rows[0])]
        for n in table_rows:
            sec = secs[str(n)]
            sweep[str(n)] = {
                "ms_per_step": round(1000 * sec, 3),
                "step_over_first": round(sec / first, 3),
                **table_mib(engines[str(n)]),
            }
        print(f"table sweep ({args.sweep_arm}, batch {args.sweep_batch}): {sweep}", file=sys.stderr, flush=True)
        del engines

    line = {
        "benchmark": "train_step",
        "step": "engine.train (TrainStep in DMP, FBGEMM fused tables, world size 1)",
        "preset": args.preset,
        "elastic": cfg0.elastic.model_dump(),
        "device": str(device),
        "precondition_frequency": freq,
        # what `auto` resolved to on this machine (bf16 only where it multiplies bf16 fast)
        "shampoo_dtypes": {
            "rotation": str(low_precision_dtype(cfg0.optim.rotation_dtype, device) or torch.float32),
            "factor": str(low_precision_dtype(cfg0.optim.factor_dtype, device) or torch.float32),
        },
        "variants": {name: list(ov[len(ARMS["matta_shampoo"]) :]) for name, ov in variants.items()},
        "matmul_fp32_gflop_per_s": None if peak is None else round(peak / 1e9, 1),
        "steps_per_round": steps,
        "rounds": args.rounds,
        "results": results,
        "table_sweep": {"arm": args.sweep_arm, "batch": args.sweep_batch, "rows": sweep} if sweep else None,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "fast_bf16_matmul": fast_bf16_matmul(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_avg_1m_start": load_start,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
