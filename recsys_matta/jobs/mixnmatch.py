"""Mix'n'Match report: extract many Students of different sizes from one trained MatTA model,
score each standalone model on held-out days, and write a table (JSON + markdown) and the
size / AucLoss frontier plot. Every row carries the model's serving cost next to its size: FLOPs
per example and the p50 latency of its pyfunc on 1,000 raw rows of the scored day
(recsys_matta.models.cost). `--budget` picks the best model under a parameter, FLOP or latency
budget."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from recsys_matta.data.reader import DayReader
from recsys_matta.errors import UserError
from recsys_matta.jobs.scoring import raw_frames, score_batches
from recsys_matta.metrics import rel_improvement
from recsys_matta.models import MatTAModel
from recsys_matta.models.cost import flops_per_example, serving_latency_ms
from recsys_matta.models.extract import (
    Choice,
    all_choices,
    extract,
    num_units,
    student_choice,
    ta_choice,
    wide_narrow_wide_sweep,
)
from recsys_matta.models.standalone import StandaloneModel
from recsys_matta.specs import FeatureSpec
from recsys_matta.train.checkpoint import atomic_write_text


LATENCY_ROWS = 1000


@dataclass
class MixRow:
    """One extracted model. `k`: its wide-narrow-wide K (None when not of that family);
    `flops_per_example`: forward FLOPs of its dense tower; `latency_ms_per_1000`: p50 ms of its
    pyfunc per 1,000 raw rows (None when not measured)."""

    choice: str
    k: int | None
    flags: list[bool]
    dense_params: int
    embedding_params: int
    flops_per_example: float
    latency_ms_per_1000: float | None
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
    latency: bool = True,
) -> dict:
    """Score every candidate sub-network on `days`; write report.json / report.md / frontier.png.
    `latency=False` leaves the measured latency out (None)."""
    model.eval()
    choices = candidate_choices(model, all_max)
    models = {c.label: (k, c, extract(model, c)) for k, c in choices}
    lat = _latencies(models, spec, data_root, days[0]) if latency else {}
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
                flops_per_example=flops_per_example(m),
                latency_ms_per_1000=lat.get(name),
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
        "latency_rows": LATENCY_ROWS,
        "torch_threads": torch.get_num_threads(),
        "models": [asdict(r) for r in rows],
    }
    write_report(report, Path(out_dir))
    return report


def _latencies(models: dict, spec: FeatureSpec, data_root: Path, day: str) -> dict[str, float]:
    """p50 ms of each model's pyfunc (the registered artifact's path: to_dict -> from_dict ->
    `StudentPyfunc.predict_df`) on the first `LATENCY_ROWS` raw rows of `day`."""
    from recsys_matta.serving.pyfunc import StudentPyfunc

    frame = next(raw_frames(spec, Path(data_root), day, limit=LATENCY_ROWS))
    out = {}
    for name, (_, _, m) in models.items():
        py = StudentPyfunc()
        py.spec, py.model = spec, StandaloneModel.from_dict(m.to_dict()).eval()
        out[name] = serving_latency_ms(py, frame) * 1000 / len(frame)
    return out


def wide_narrow_wide_rows(report: dict) -> list[dict]:
    """The report's wide-narrow-wide models in order of K."""
    return sorted((r for r in report["models"] if r["k"] is not None), key=lambda r: r["k"])


def wide_narrow_wide_markdown(report: dict) -> str:
    """The wide-narrow-wide table users choose a size from (size, cost, AucLoss vs baseline)."""
    lines = [
        "| K | choice | dense params | FLOPs/example | p50 ms / 1k rows | AucLoss | vs baseline |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in wide_narrow_wide_rows(report):
        tag = " (Student)" if r["is_student"] else " (TA)" if r["is_ta"] else ""
        ms = "-" if r.get("latency_ms_per_1000") is None else f"{r['latency_ms_per_1000']:.2f}"
        lines.append(
            f"| {r['k']} | {r['choice']}{tag} | {r['dense_params']:,} | {r['flops_per_example']:,.0f} | {ms} | "
            f"{r['auc_loss']:.5f} | {100 * r['rel_improvement']:+.2f}% |"
        )
    return "\n".join(lines) + "\n"


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
        "| choice | K | dense params | embedding params | FLOPs/example | p50 ms / 1k rows | AucLoss | vs baseline |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["models"]:
        tag = " (Student)" if r["is_student"] else " (TA)" if r["is_ta"] else ""
        k = "" if r["k"] is None else str(r["k"])
        ms = "-" if r.get("latency_ms_per_1000") is None else f"{r['latency_ms_per_1000']:.2f}"
        lines.append(
            f"| {r['choice']}{tag} | {k} | {r['dense_params']:,} | {r['embedding_params']:,} | "
            f"{r.get('flops_per_example', math.nan):,.0f} | {ms} | {r['auc_loss']:.5f} | {100 * r['rel_improvement']:+.2f}% |"
        )
    return "\n".join(lines) + "\n"


BUDGET_KEYS = {"params": "dense_params", "flops": "flops_per_example", "latency_ms": "latency_ms_per_1000"}


def parse_budget(text: str) -> tuple[str, float]:
    """`N` or `params=N` (dense parameters), `flops=N` (per example), `latency_ms=X` (p50 per
    1,000 rows) -> (report column, limit)."""
    key, sep, value = text.partition("=")
    if not sep:
        key, value = "params", text
    if key not in BUDGET_KEYS:
        raise UserError(f"--budget {text!r}: unknown budget {key!r}; expected one of {sorted(BUDGET_KEYS)} (e.g. flops=2e5)")
    try:
        limit = float(value)
    except ValueError:
        raise UserError(f"--budget {text!r}: {value!r} is not a number") from None
    return BUDGET_KEYS[key], limit


def best_under_budget(report: dict, budget: int | float, column: str = "dense_params") -> dict | None:
    """The lowest-AucLoss model with at most `budget` of `column` (dense parameters, FLOPs per
    example or latency): the elastic use."""
    fits = [
        r for r in report["models"]
        if r.get(column) is not None and r[column] <= budget and math.isfinite(r["auc_loss"])
    ]  # fmt: skip
    return min(fits, key=lambda r: (r["auc_loss"], r[column])) if fits else None
