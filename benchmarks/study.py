"""The ablation study as a benchmark: `matta study` plus one JSON line with its headline numbers.

    OMP_NUM_THREADS=1 python benchmarks/study.py --spec feature_specs/synthetic.yaml \
        --data DATA --out runs/study-synth --days 2026-01-01..2026-01-14 --seeds 3 [key=value ...]

Arguments are `matta study`'s (see `matta study --help`). The JSON line holds, per arm and model,
the AucLoss and relative improvement (mean, std over seeds), the wall time of this invocation,
and each job's compute seconds per day (to budget a full run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from recsys_matta.study.arms import StudySettings
    from recsys_matta.study.command import run_study

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--days", default=None)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--arms", default=None, help="comma list")
    p.add_argument("--adam-lr", type=float, default=None)
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--name", default=None)
    p.add_argument("--no-tracking", action="store_true")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    settings = StudySettings(
        spec=a.spec, data=a.data, out=a.out, days=a.days, seeds=a.seeds, jobs=a.jobs, quick=a.quick,
        overrides=a.overrides, adam_lr=a.adam_lr, config=a.config, name=a.name, tracking=not a.no_tracking,
        **({"arms": a.arms.split(",")} if a.arms else {}),
    )  # fmt: skip
    t0 = time.perf_counter()
    meta = run_study(settings, echo=lambda s: print(s, file=sys.stderr, flush=True))
    results = next(iter(json.loads((a.out / "results.json").read_text()).values()))
    keys = ("auc_loss_mean", "auc_loss_std", "rel_improvement_mean", "rel_improvement_std")
    print(json.dumps({
        "benchmark": "study",
        "dataset": meta["name"],
        "days": len(meta["days"]),
        "seeds": meta["seeds"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "results": {f"{arm}/{m}": {k: s.get(k) for k in keys} for arm, ms in results.items() for m, s in ms.items()},
        "job_s_per_day": {label: j["per_day_s"] for label, j in meta["jobs"].items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
