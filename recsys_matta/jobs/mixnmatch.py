"""Mix'n'Match report: extract many Students of different sizes from one trained MatTA model,
score each standalone model on held-out days, and write a table (JSON + markdown) and the
size / AucLoss frontier plot. `--budget` picks the best model under a parameter budget."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from recsys_matta.data.reader import DayReader
from recsys_matta.jobs.scoring import score_batches
from recsys_matta.metrics import rel_improvement
from recsys_matta.models import MatTAModel
from recsys_matta.models.extract import (
    Choice,
    all_choices,
    extract,
    num_units,
    student_choice,
    ta_choice,
    wide_narrow_wide_sweep,
)
from recsys_matta.specs import FeatureSpec
from recsys_matta.train.checkpoint import atomic_write_text


@dataclass
class MixRow:
    """One extracted model. `k`: its wide-narrow-wide K (None when not of that family)."""

    choice: str
    k: int | None
    flags: list[bool]
    dense_params: int
    embedding_params: int
    auc_loss: float
    rel_improvement: float
    is_student: bool
    is_ta: bool


def candidate_choices(model: MatTAModel, all_max: int) -> list[tuple[int | None, Choice]]:
    """The wide-narrow-wide sweep, plus every other choice when there are at most `all_max`."""
    cfg = model.cfg
    out: list[tuple[int | None, Choice]] = list(wide_narrow_wide_sweep(cfg))
    seen = {c for _, c in out}
    if 2 ** num_units(cfg) <= all_max:
        out += [(None, c) for c in all_choices(cfg) if c not in seen]
    return out


def mixnmatch_report(
    model: MatTAModel,
    baseline: MatTAModel | None,
    spec: FeatureSpec,
    data_root: Path,
    days: list[str],
    label: str,
    out_dir: Path,
    all_max: int = 64,
    batch_size: int = 8192,
) -> dict:
    """Score every candidate sub-network on `days`; write report.json / report.md / frontier.png."""
    model.eval()
    choices = candidate_choices(model, all_max)
    models = {c.label: (k, c, extract(model, c)) for k, c in choices}
    fns = {
        name: (lambda b, m=m: m(b.sparse.values(), b.sparse.lengths(), b.dense))
        for name, (_, _, m) in models.items()
    }
    if baseline is not None:
        baseline.eval()
        fns["__baseline__"] = lambda b: baseline(b)[0]
    metrics = score_batches(fns, DayReader(spec, data_root, batch_size), days, label)
    base = metrics.pop("__baseline__").auc_loss if baseline is not None else math.nan
    s_label, ta_label = student_choice(model.cfg).label, ta_choice(model.cfg).label
    rows = []
    for name, (k, c, m) in models.items():
        n = m.num_parameters()
        rows.append(
            MixRow(
                choice=name,
                k=k,
                flags=list(c.flags),
                dense_params=n["dense"],
                embedding_params=n["embedding"],
                auc_loss=metrics[name].auc_loss,
                rel_improvement=rel_improvement(metrics[name].auc_loss, base),
                is_student=name == s_label,
                is_ta=name == ta_label,
            )
        )
    rows.sort(key=lambda r: (r.dense_params, r.choice))
    report = {
        "days": days,
        "label": label,
        "rows_scored": metrics[s_label].rows,
        "baseline_auc_loss": base,
        "models": [asdict(r) for r in rows],
    }
    write_report(report, Path(out_dir))
    return report


def write_report(report: dict, out_dir: Path) -> None:
    from recsys_matta.tracking.plots import plot_frontier

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out_dir / "report.md", report_markdown(report))
    rows = report["models"]
    plot_frontier(
        rows,
        report["baseline_auc_loss"],
        out_dir / "frontier.png",
        student=next((r for r in rows if r["is_student"]), None),
        ta=next((r for r in rows if r["is_ta"]), None),
    )


def report_markdown(report: dict) -> str:
    lines = [
        f"Mix'n'Match on {', '.join(report['days'])} ({report['rows_scored']} rows, label "
        f"`{report['label']}`); baseline AucLoss {report['baseline_auc_loss']:.5f}",
        "",
        "| choice | K | dense params | embedding params | AucLoss | vs baseline |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in report["models"]:
        tag = " (Student)" if r["is_student"] else " (TA)" if r["is_ta"] else ""
        k = "" if r["k"] is None else str(r["k"])
        lines.append(
            f"| {r['choice']}{tag} | {k} | {r['dense_params']:,} | {r['embedding_params']:,} | "
            f"{r['auc_loss']:.5f} | {100 * r['rel_improvement']:+.2f}% |"
        )
    return "\n".join(lines) + "\n"


def best_under_budget(report: dict, budget: int) -> dict | None:
    """The lowest-AucLoss model with at most `budget` dense parameters (the elastic use)."""
    fits = [r for r in report["models"] if r["dense_params"] <= budget and math.isfinite(r["auc_loss"])]
    return min(fits, key=lambda r: (r["auc_loss"], r["dense_params"])) if fits else None
