"""Aggregation of the jobs' metrics.jsonl into the study's numbers, on hand-written records."""

import math

import pytest

from recsys_matta.study.results import aggregate, day_curves, json_safe, mean_std, scored_days
from recsys_matta.train.records import write_records
from tests.records import day_record, metrics

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]


def _write(runs, arm, seed, per_day):
    """per_day: list of {model: auc_loss} for DAYS."""
    folder = runs / arm / f"seed{seed}"
    folder.mkdir(parents=True)
    recs = [day_record(d, i, **{m: metrics(v) for m, v in r.items()}) for i, (d, r) in enumerate(zip(DAYS, per_day))]
    write_records(folder / "metrics.jsonl", recs)


def test_scored_days_is_the_last_half():
    assert scored_days(DAYS) == DAYS[2:]
    assert scored_days(DAYS[:3]) == DAYS[1:3]
    assert scored_days(DAYS[:1]) == DAYS[:1]


def test_mean_std_uses_sample_std():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    m, s = mean_std([0.5])
    assert m == 0.5 and math.isnan(s)


def test_aggregate_last_half_per_seed_relative_to_same_seed_baseline(tmp_path):
    runs = tmp_path / "runs"
    # host arm matta_shampoo: student, ta and the baseline; first half must be ignored (9.0)
    _write(runs, "matta_shampoo", 0, [{"student": 9, "ta": 9, "baseline": 9}] * 2
           + [{"student": 0.30, "ta": 0.20, "baseline": 0.40}, {"student": 0.34, "ta": 0.24, "baseline": 0.40}])
    _write(runs, "matta_shampoo", 1, [{"student": 9, "ta": 9, "baseline": 9}] * 2
           + [{"student": 0.45, "ta": 0.40, "baseline": 0.50}, {"student": 0.45, "ta": 0.40, "baseline": 0.50}])
    _write(runs, "shampoo_only", 0, [{"student": 9}] * 2 + [{"student": 0.36}, {"student": 0.36}])
    _write(runs, "shampoo_only", 1, [{"student": 9}] * 2 + [{"student": 0.50}, {"student": 0.50}])
    res = aggregate(runs, ["shampoo_only", "matta_shampoo"], [0, 1], DAYS, host="matta_shampoo")
    assert list(res) == ["baseline", "shampoo_only", "matta_shampoo"]
    assert list(res["matta_shampoo"]) == ["student", "ta"]
    base = res["baseline"]["student"]
    assert base["auc_loss_per_seed"] == pytest.approx([0.40, 0.50])
    assert base["auc_loss_mean"] == pytest.approx(0.45)
    assert base["auc_loss_std"] == pytest.approx(math.sqrt(0.005))
    assert base["rel_improvement_mean"] == 0.0
    st = res["matta_shampoo"]["student"]
    # seed 0: mean(0.30, 0.34) = 0.32 -> (0.32 - 0.40) / 0.40 = -0.2; seed 1: (0.45 - 0.5) / 0.5 = -0.1
    assert st["auc_loss_per_seed"] == pytest.approx([0.32, 0.45])
    assert st["rel_improvement_per_seed"] == pytest.approx([-0.2, -0.1])
    assert st["rel_improvement_mean"] == pytest.approx(-0.15)
    assert st["rel_improvement_std"] == pytest.approx(math.sqrt(0.005))
    assert st["seeds"] == [0, 1] and st["days"] == DAYS[2:] and st["all_days"] == DAYS
    ta = res["matta_shampoo"]["ta"]
    assert ta["rel_improvement_per_seed"] == pytest.approx([(0.22 - 0.4) / 0.4, (0.4 - 0.5) / 0.5])
    so = res["shampoo_only"]["student"]
    assert so["rel_improvement_per_seed"] == pytest.approx([-0.1, 0.0])
    assert "event_auc_loss_mean" not in so  # no event metric in these records


def test_incomplete_job_drops_its_seed(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "matta_shampoo", 0, [{"student": 0.3, "ta": 0.3, "baseline": 0.4}] * 4)
    _write(runs, "matta_shampoo", 1, [{"student": 0.1}])  # one day of four
    res = aggregate(runs, ["matta_shampoo"], [0, 1], DAYS, host="matta_shampoo")
    assert res["matta_shampoo"]["student"]["seeds"] == [0]
    assert math.isnan(res["matta_shampoo"]["student"]["auc_loss_std"])
    assert json_safe(res)["matta_shampoo"]["student"]["auc_loss_std"] is None


def test_day_curves_average_over_seeds(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "matta_shampoo", 0, [{"student": 0.2, "ta": 0.1, "baseline": 0.4}] * 4)
    _write(runs, "matta_shampoo", 1, [{"student": 0.4, "ta": 0.3, "baseline": 0.6}] * 4)
    curves = day_curves(runs, ["matta_shampoo"], [0, 1], DAYS, host="matta_shampoo")
    assert curves["baseline/student"] == pytest.approx([0.5] * 4)
    assert curves["matta_shampoo/student"] == pytest.approx([0.3] * 4)
    assert curves["matta_shampoo/ta"] == pytest.approx([0.2] * 4)
