"""The elastic frontier of a study: every wide-narrow-wide Student of every MatTA arm, per seed,
scored the way the arms are (progressive validation over the scored days), against the same
seed's baseline.

    for each shared-MatTA arm, seed, scored day d:
        model    = the arm's checkpoint of the day before d        (kept: train.keep_checkpoints)
        baseline = the host job's checkpoint of that day, same seed
        AucLoss of every K of the sweep and of the baseline on d
    per seed: mean over the scored days; per K: mean ± std over seeds, relative improvement
    paired by seed; the targets (every K better than the baseline, AucLoss non-increasing in K
    within `MONOTONE_TOL` per step) per arm.

FLOPs per example and the pyfunc's p50 latency per 1,000 rows (recsys_matta.models.cost) are
measured once per K (the first seed's last checkpoint) in the same run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from recsys_matta.errors import UserError
from recsys_matta.study.arms import ARM_BY_NAME
from recsys_matta.study.results import mean_std, scored_days
from recsys_matta.study.runner import job_config

MONOTONE_TOL = 0.001  # 0.1% relative per step of K


def shared_matta_arms(arms: list[str]) -> list[str]:
    """The arms whose checkpoints hold one nested tower (Mix'n'Match sub-networks)."""
    out = []
    for a in arms:
        o = ARM_BY_NAME[a].overrides
        if "student_only=false" in o and "model.share_params=false" not in o:
            out.append(a)
    return out


def _load(job, spec, day: str):
    from recsys_matta.models import MatTAModel
    from recsys_matta.study.figures import _checkpoint

    cfg = job_config(job)
    state, _ = _checkpoint(Path(job.workdir), spec, day)
    model = MatTAModel(spec, cfg.model)
    model.load_state_dict(state["model"])
    baseline = None
    if state.get("baseline") is not None:
        baseline = MatTAModel(spec, cfg.model, student_only=True)
        baseline.load_state_dict(state["baseline"])
    return cfg, model.eval(), None if baseline is None else baseline.eval()


def elastic_frontier(jobs: list, host: str, spec, days: list[str], label: str, echo: Callable[[str], None] = print) -> dict:
    """{"scored_days", "arms": {arm: {"rows": [...], "targets": {...}}}} (see the module docstring)."""
    from recsys_matta.data.reader import DayReader
    from recsys_matta.jobs.mixnmatch import _latencies
    from recsys_matta.jobs.scoring import score_batches
    from recsys_matta.models.cost import flops_per_example
    from recsys_matta.models.extract import extract, wide_narrow_wide_sweep

    scored = scored_days(days)
    if len(scored) == len(days):
        raise UserError("the elastic frontier needs a trained day before the first scored day")
    by = {(j.arm, j.seed): j for j in jobs}
    seeds = sorted({j.seed for j in jobs})
    arms = shared_matta_arms(sorted({j.arm for j in jobs}, key=list(ARM_BY_NAME).index))
    out: dict = {"scored_days": scored, "label": label, "monotone_tol": MONOTONE_TOL, "arms": {}}
    for arm in arms:
        per_k: dict[int, dict[int, list[float]]] = {}
        base: dict[int, list[float]] = {}
        info: dict[int, dict] = {}
        for seed in seeds:
            job, host_job = by.get((arm, seed)), by.get((host, seed))
            if job is None or host_job is None:
                continue
            for day in scored:
                prev = days[days.index(day) - 1]
                try:
                    cfg, model, _ = _load(job, spec, prev)
                    _, _, baseline = _load(host_job, spec, prev)
                except UserError as e:
                    echo(f"elastic frontier: {arm}/seed{seed} {day} skipped: {e}")
                    continue
                sweep = wide_narrow_wide_sweep(model.cfg)
                subs = {k: extract(model, c) for k, c in sweep}
                fns = {k: (lambda b, m=m: m(b.sparse.values(), b.sparse.lengths(), b.dense)) for k, m in subs.items()}
                if baseline is not None:
                    fns["baseline"] = lambda b, m=baseline: m(b)[0]
                got = score_batches(fns, DayReader(spec, Path(job.data), cfg.train.eval_batch_size), [day], label)
                for k, _ in sweep:
                    per_k.setdefault(k, {}).setdefault(seed, []).append(got[k].auc_loss)
                if "baseline" in got:
                    base.setdefault(seed, []).append(got["baseline"].auc_loss)
                if not info:
                    lat = _latencies({c.label: (k, c, subs[k]) for k, c in sweep}, spec, Path(job.data), day)
                    for k, c in sweep:
                        n = subs[k].num_parameters()
                        info[k] = {"choice": c.label, "dense_params": n["dense"], "embedding_params": n["embedding"],
                                   "flops_per_example": flops_per_example(subs[k]), "latency_ms_per_1000": lat[c.label]}  # fmt: skip
            echo(f"elastic frontier: {arm}/seed{seed} scored")
        if per_k:
            out["arms"][arm] = _summarise(per_k, base, info, len(scored))
    if not out["arms"]:
        raise UserError("no MatTA arm has the checkpoints of the days before the scored days")
    return out


def _summarise(per_k: dict, base: dict, info: dict, n_days: int) -> dict:
    base_seed = {s: sum(v) / len(v) for s, v in base.items() if len(v) == n_days}
    rows = []
    for k in sorted(per_k):
        seed_mean = {s: sum(v) / len(v) for s, v in per_k[k].items() if len(v) == n_days}
        ok = sorted(s for s in seed_mean if s in base_seed)
        m, sd = mean_std([seed_mean[s] for s in ok])
        rel = [(seed_mean[s] - base_seed[s]) / base_seed[s] for s in ok]
        rm, rsd = mean_std(rel)
        rows.append({"k": k, **info.get(k, {}), "auc_loss_mean": m, "auc_loss_std": sd,
                     "rel_improvement_mean": rm, "rel_improvement_std": rsd, "seeds": ok,
                     "auc_loss_per_seed": [seed_mean[s] for s in ok], "rel_improvement_per_seed": rel})  # fmt: skip
    bm, bsd = mean_std(list(base_seed.values()))
    steps = [
        (a["k"], b["k"], (b["auc_loss_mean"] - a["auc_loss_mean"]) / a["auc_loss_mean"]) for a, b in zip(rows, rows[1:])
    ]
    worst = max((r["rel_improvement_mean"] for r in rows), default=math.nan)
    targets = {
        "every_k_beats_baseline": bool(rows) and all(r["rel_improvement_mean"] < 0 for r in rows),
        "worst_rel_improvement": worst,
        "monotone": all(d <= MONOTONE_TOL for _, _, d in steps),
        "steps": [{"from_k": a, "to_k": b, "rel_change": d} for a, b, d in steps],
    }
    return {"rows": rows, "baseline_auc_loss_mean": bm, "baseline_auc_loss_std": bsd, "targets": targets}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def plot_elastic_frontier(frontier: dict, path: Path) -> None:
    """Dense params vs relative improvement over the baseline, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, a in frontier["arms"].items():
        rows = a["rows"]
        xs = [r.get("dense_params", r["k"]) for r in rows]
        ys = [100 * r["rel_improvement_mean"] for r in rows]
        es = [100 * (r["rel_improvement_std"] if _finite(r["rel_improvement_std"]) else 0) for r in rows]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=ARM_BY_NAME[arm].title)
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(f"K{r['k']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(0, color="k", ls="--", lw=1, label="baseline")
    ax.set_xscale("log")
    ax.set_xlabel("dense parameters of the extracted Student")
    ax.set_ylabel("AucLoss vs baseline (%, lower is better)")
    ax.set_title("Wide-narrow-wide frontier (mean ± std over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
