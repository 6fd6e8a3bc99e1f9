"""Report plots (PNG, matplotlib's Agg renderer through `Figure`, no pyplot global state).

* `plot_auc_loss_per_day(records, path)`: AucLoss per day of the Student, TA and baseline.
* `plot_rel_improvement_per_day(records, path)`: `<model>_rel_improvement` per day.
* `plot_frontier(points, baseline_auc_loss, path, student=, ta=)`: the Mix'n'Match frontier,
  dense parameters vs AucLoss, the baseline as a horizontal line, Student and TA marked.

`records` are the per-day `DayRecord`s (recsys_matta.train.records, the lines of
`metrics.jsonl`); a model or value missing on a day is skipped (the line joins the neighbouring
days). Every function returns the PNG path;
matplotlib loads on first use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from recsys_matta.train.records import DayRecord

MODELS = ("student", "ta", "baseline")
_STYLE = {
    "student": {"color": "tab:blue", "marker": "o"},
    "ta": {"color": "tab:orange", "marker": "s"},
    "baseline": {"color": "tab:gray", "marker": "^"},
    "champion": {"color": "tab:green", "marker": "D"},
}
_MAX_TICKS = 12


def _number(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def days_of(records: Sequence[DayRecord]) -> list[str]:
    return [r.day for r in records]


def series(records: Sequence[DayRecord], model: str, metric: str = "auc_loss") -> np.ndarray:
    """(days,) values of `metric` of `model` per day, NaN where missing."""
    values = []
    for r in records:
        m = r.metrics_of(model)
        values.append(math.nan if m is None else _number(getattr(m, metric, None)))
    return np.array(values, dtype=np.float64)


def rel_series(records: Sequence[DayRecord], model: str) -> np.ndarray:
    """(days,) relative improvements of `model` over the baseline, NaN where missing."""
    return np.array([_number(r.rel_improvement(model)) for r in records], dtype=np.float64)


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots()


def _day_axis(ax: Any, days: list[str]) -> np.ndarray:
    x = np.arange(len(days))
    step = max(1, math.ceil(len(days) / _MAX_TICKS))
    ax.set_xticks(x[::step], [days[i] for i in x[::step]], rotation=30, ha="right")
    ax.set_xlabel("day")
    ax.grid(True, alpha=0.3)
    return x


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, format="png")
    return p


def plot_auc_loss_per_day(
    records: Sequence[DayRecord], path: str | Path, models: Sequence[str] = MODELS
) -> Path:
    """AucLoss (1 - AUC, lower is better) per day, one line per model present."""
    fig, ax = _figure()
    days = days_of(records)
    x = _day_axis(ax, days)
    for m in models:
        y = series(records, m)
        ok = np.isfinite(y)  # a missing day is skipped, the line joins its neighbours
        if ok.any():
            ax.plot(x[ok], y[ok], label=m, **_STYLE.get(m, {}))
    ax.set_ylabel("AucLoss (1 - AUC)")
    ax.set_title("AucLoss per day")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _save(fig, path)


def plot_rel_improvement_per_day(
    records: Sequence[DayRecord],
    path: str | Path,
    models: Sequence[str] = ("student", "ta"),
) -> Path:
    """The relative AucLoss change over the baseline per day (below 0 is better)."""
    fig, ax = _figure()
    x = _day_axis(ax, days_of(records))
    ax.axhline(0.0, color="black", linewidth=0.8)
    for m in models:
        y = rel_series(records, m)
        ok = np.isfinite(y)
        if ok.any():
            ax.plot(x[ok], y[ok], label=m, **_STYLE.get(m, {}))
    ax.set_ylabel("relative AucLoss improvement over baseline")
    ax.set_title("Relative improvement per day")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _save(fig, path)


@dataclass(frozen=True)
class FrontierPoint:
    """One extracted model of the Mix'n'Match sweep.

    Args:
        choice: the sub-network's label.
        dense_params: its dense (tower) parameter count.
        auc_loss: its AucLoss on the held-out days.
    """

    choice: str
    dense_params: int
    auc_loss: float

    @classmethod
    def of(cls, p: "FrontierPoint | Mapping[str, Any]") -> "FrontierPoint":
        if isinstance(p, FrontierPoint):
            return p
        try:
            label = str(p.get("choice", p.get("label", "")))
            return cls(label, int(p["dense_params"]), float(p["auc_loss"]))
        except KeyError as e:
            raise KeyError(f"frontier point {dict(p)!r} lacks key {e}") from None


def pareto_front(points: Sequence[FrontierPoint | Mapping[str, Any]]) -> list[FrontierPoint]:
    """Points no other point beats on both size and AucLoss, by increasing size (each strictly
    better than the previous); ties keep the first."""
    pts = sorted((FrontierPoint.of(p) for p in points), key=lambda p: (p.dense_params, p.auc_loss))
    front: list[FrontierPoint] = []
    for p in pts:
        if math.isfinite(p.auc_loss) and (not front or p.auc_loss < front[-1].auc_loss):
            front.append(p)
    return front


def _resolve(
    mark: FrontierPoint | Mapping[str, Any] | str | None, pts: list[FrontierPoint]
) -> FrontierPoint | None:
    if mark is None or not isinstance(mark, str):
        return None if mark is None else FrontierPoint.of(mark)
    found = [p for p in pts if p.choice == mark]
    if not found:
        raise KeyError(f"no frontier point with choice {mark!r}")
    return found[0]


def plot_frontier(
    points: Sequence[FrontierPoint | Mapping[str, Any]],
    baseline_auc_loss: float | None,
    path: str | Path,
    student: FrontierPoint | Mapping[str, Any] | str | None = None,
    ta: FrontierPoint | Mapping[str, Any] | str | None = None,
) -> Path:
    """Dense parameters vs AucLoss of every extracted model, the Pareto frontier as a step line,
    the baseline's AucLoss as a horizontal line; `student` / `ta` (a point, or the `choice` of
    one of `points`) are marked."""
    pts = [FrontierPoint.of(p) for p in points]
    fig, ax = _figure(7.0, 4.5)
    if pts:
        ax.scatter([p.dense_params for p in pts], [p.auc_loss for p in pts], s=14,
                   color="tab:purple", alpha=0.5, label="extracted models")  # fmt: skip
        front = pareto_front(pts)
        ax.step([p.dense_params for p in front], [p.auc_loss for p in front], where="post",
                color="tab:purple", label="frontier")  # fmt: skip
        sizes = [p.dense_params for p in pts if p.dense_params > 0]
        if sizes and max(sizes) / min(sizes) > 20:
            ax.set_xscale("log")
    if baseline_auc_loss is not None and math.isfinite(baseline_auc_loss):
        ax.axhline(baseline_auc_loss, linestyle="--", **{"color": _STYLE["baseline"]["color"]},
                   label=f"baseline ({baseline_auc_loss:.4g})")  # fmt: skip
    for name, mark in (("student", student), ("ta", ta)):
        p = _resolve(mark, pts)
        if p is not None:
            style = _STYLE[name]
            label = f"{name} ({p.auc_loss:.4g})"
            ax.scatter([p.dense_params], [p.auc_loss], s=80, zorder=3, label=label, **style)
    ax.set_xlabel("dense parameters")
    ax.set_ylabel("AucLoss (1 - AUC)")
    ax.set_title("Mix'n'Match: size vs AucLoss")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return _save(fig, path)
