"""Report plots: the numbers they draw (exact) and that they write PNG files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys_matta.tracking.plots import (
    FrontierPoint,
    pareto_front,
    plot_auc_loss_per_day,
    plot_frontier,
    plot_rel_improvement_per_day,
    rel_series,
    series,
)
from tests.records import day_record
from tests.records import metrics as _m

PNG = b"\x89PNG\r\n\x1a\n"


def _rec(day: str, student, ta=None, baseline=None, s_rel=None, ta_rel=None):
    return day_record(
        day, student=student, ta=ta, baseline=baseline, student_rel_improvement=s_rel, ta_rel_improvement=ta_rel
    )


RECORDS = [
    _rec("2026-11-01", _m(0.30, 0.5), _m(0.28), _m(0.32), 0.0625, 0.125),
    _rec("2026-11-02", _m(0.29, math.nan), _m(0.27)),
    _rec("2026-11-03", _m(0.28, math.nan), _m(0.26), _m(0.31), 0.1, 0.2),
]


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 2000


def test_series_with_gaps():
    np.testing.assert_array_equal(series(RECORDS, "student"), [0.30, 0.29, 0.28])
    np.testing.assert_array_equal(series(RECORDS, "baseline"), [0.32, math.nan, 0.31])
    np.testing.assert_array_equal(series(RECORDS, "student", "log_loss"), [0.5, math.nan, math.nan])
    np.testing.assert_array_equal(rel_series(RECORDS, "ta"), [0.125, math.nan, 0.2])


def test_day_plots_write_png(tmp_path):
    a = plot_auc_loss_per_day(RECORDS, tmp_path / "plots" / "auc_loss.png")
    b = plot_rel_improvement_per_day(RECORDS, tmp_path / "plots" / "rel.png")
    assert a == tmp_path / "plots" / "auc_loss.png" and _is_png(a)
    assert _is_png(b)
    many = [_rec(f"d{i:03d}", _m(0.3)) for i in range(90)]
    assert _is_png(plot_auc_loss_per_day(many, tmp_path / "many.png"))
    assert _is_png(plot_auc_loss_per_day([], tmp_path / "empty.png"))


def test_pareto_front_exact():
    pts = [
        {"choice": "a", "dense_params": 100, "auc_loss": 0.30},
        {"choice": "b", "dense_params": 50, "auc_loss": 0.35},
        {"choice": "c", "dense_params": 80, "auc_loss": 0.36},  # dominated by b
        {"choice": "d", "dense_params": 400, "auc_loss": 0.30},  # tie with a, bigger
        {"choice": "e", "dense_params": 800, "auc_loss": 0.25},
        {"choice": "f", "dense_params": 10, "auc_loss": float("nan")},
    ]
    assert [p.choice for p in pareto_front(pts)] == ["b", "a", "e"]
    with pytest.raises(KeyError, match="auc_loss"):
        FrontierPoint.of({"dense_params": 3})


def test_frontier_plot(tmp_path):
    pts = [FrontierPoint(f"k={k}", 1000 * 2**k, 0.3 - 0.01 * k) for k in range(8)]
    path = plot_frontier(pts, 0.31, tmp_path / "frontier.png", student="k=0", ta=pts[-1])
    assert _is_png(path)
    with pytest.raises(KeyError, match="k=99"):
        plot_frontier(pts, 0.31, tmp_path / "x.png", student="k=99")
    assert _is_png(plot_frontier([], None, tmp_path / "none.png"))
