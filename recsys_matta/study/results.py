"""From the jobs' `metrics.jsonl` files to the study's numbers.

* An arm's score for a seed = mean AucLoss over the LAST HALF of the days
  (`days[len(days) // 2:]`: 7 of 14, 2 of 3) of each model it reports.
* Relative improvement for a seed = (score - baseline score of the same seed) / baseline score
  of the same seed (negative is better, as in the paper's tables).
* Over seeds: mean and sample standard deviation (ddof=1; NaN with one seed).

The baseline's records come from the host arm's job (the trainer's built-in baseline).
Metrics on the event label (`event_auc_loss`, present when the evaluation label is the Teacher's
and the data has events) are summarised the same way under `event_*` keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from recsys_matta.study.arms import ARM_BY_NAME, BASELINE
from recsys_matta.train.records import METRICS_FILE, DayRecord, read_records

METRICS = ("auc_loss", "event_auc_loss")


def scored_days(days: list[str]) -> list[str]:
    """The last half of the days (what the tables average over)."""
    return list(days[len(days) // 2 :])


def records_by_day(workdir: Path) -> dict[str, DayRecord]:
    """{day: record} of a job's metrics.jsonl (empty when missing)."""
    return {r.day: r for r in read_records(Path(workdir) / METRICS_FILE)}


def _value(record: DayRecord | None, model: str, metric: str) -> float:
    m = None if record is None else record.metrics_of(model)
    v = None if m is None else getattr(m, metric)
    return math.nan if v is None else float(v)


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std ddof=1) of the finite values; NaN where undefined."""
    x = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan


def model_sources(arm: str, host: str) -> list[tuple[str, str, str]]:
    """[(model name in the results, job arm, model key in its records)] of an arm."""
    if arm == BASELINE:
        return [("student", host, "baseline")]
    return [(m, arm, key) for m, key in ARM_BY_NAME[arm].sources()]


def per_seed_scores(
    runs: Path, arm: str, seeds: list[int], days: list[str], model_key: str, metric: str
) -> dict[int, float]:
    """{seed: mean `metric` of `model_key` over `days`} for the seeds whose job has every day."""
    out = {}
    for seed in seeds:
        recs = records_by_day(runs / arm / f"seed{seed}")
        vals = [_value(recs.get(d), model_key, metric) for d in days]
        if days and all(d in recs for d in days):
            out[seed] = float(np.mean(vals))
    return out


def aggregate(runs: Path, arms: list[str], seeds: list[int], days: list[str], host: str) -> dict:
    """{arm: {model: stats}} for the baseline and `arms` (see the module docstring)."""
    scored = scored_days(days)
    base = {m: per_seed_scores(runs, host, seeds, scored, "baseline", m) for m in METRICS}
    out: dict[str, dict] = {}
    for arm in [BASELINE, *arms]:
        out[arm] = {}
        for model, job_arm, key in model_sources(arm, host):
            stats: dict = {"days": scored, "all_days": list(days), "source": f"{job_arm}/{key}"}
            for metric in METRICS:
                scores = per_seed_scores(runs, job_arm, seeds, scored, key, metric)
                ok = sorted(s for s, v in scores.items() if math.isfinite(v))
                if not ok:
                    continue
                rel = [
                    (scores[s] - base[metric][s]) / base[metric][s]
                    if s in base[metric] and base[metric][s] > 0
                    else math.nan
                    for s in ok
                ]
                prefix = "" if metric == "auc_loss" else "event_"
                m, sd = mean_std([scores[s] for s in ok])
                rm, rsd = mean_std(rel)
                stats.update({
                    f"{metric}_mean": m,
                    f"{metric}_std": sd,
                    f"{prefix}rel_improvement_mean": rm,
                    f"{prefix}rel_improvement_std": rsd,
                    f"{metric}_per_seed": [scores[s] for s in ok],
                    f"{prefix}rel_improvement_per_seed": rel,
                })  # fmt: skip
                if metric == "auc_loss":
                    stats["seeds"] = ok
            if "seeds" in stats:
                out[arm][model] = stats
        if not out[arm]:
            del out[arm]
    return out


def day_curves(runs: Path, arms: list[str], seeds: list[int], days: list[str], host: str) -> dict[str, list[float]]:
    """{"<arm>/<model>": per-day AucLoss averaged over the seeds that have the day}."""
    curves: dict[str, list[float]] = {}
    for arm in [BASELINE, *arms]:
        for model, job_arm, key in model_sources(arm, host):
            recs = [records_by_day(runs / job_arm / f"seed{s}") for s in seeds]
            row = []
            for d in days:
                vals = [_value(r.get(d), key, "auc_loss") for r in recs]
                vals = [v for v in vals if math.isfinite(v)]
                row.append(float(np.mean(vals)) if vals else math.nan)
            if any(math.isfinite(v) for v in row):
                curves[f"{arm}/{model}"] = row
    return curves


def job_seconds(workdir: Path) -> dict:
    """Compute seconds of a job from its records: eval / train summed over its days."""
    recs = read_records(Path(workdir) / METRICS_FILE)
    ev = sum(r.seconds.get("eval", 0.0) for r in recs)
    tr = sum(r.seconds.get("train", 0.0) for r in recs)
    per_day = (ev + tr) / max(len(recs), 1)
    return {"days": len(recs), "eval_s": round(ev, 2), "train_s": round(tr, 2), "per_day_s": round(per_day, 2)}


def json_safe(obj):
    """NaN / inf -> None, recursively (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
