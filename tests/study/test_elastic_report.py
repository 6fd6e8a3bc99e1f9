"""The elastic frontier's summary and table: targets from the per-seed means, one seed renders."""

from __future__ import annotations

import json
import math

from recsys_matta.study.elastic import MONOTONE_TOL, _summarise
from recsys_matta.study.report import frontier_markdown
from recsys_matta.study.results import json_safe


def _frontier(per_k: dict, base: dict) -> dict:
    info = {k: {"choice": f"c{k}", "dense_params": 100 * (k + 1), "flops_per_example": 10.0 * (k + 1)} for k in per_k}
    return {"monotone_tol": MONOTONE_TOL, "arms": {"matta_shampoo": _summarise(per_k, base, info, n_days=2)}}


def test_targets_follow_the_per_seed_means():
    base = {0: [0.30, 0.30], 1: [0.32, 0.32]}
    good = {0: {0: [0.29, 0.29], 1: [0.31, 0.31]}, 2: {0: [0.28, 0.28], 1: [0.30, 0.30]}}
    t = _frontier(good, base)["arms"]["matta_shampoo"]["targets"]
    assert t["every_k_beats_baseline"] and t["monotone"]
    assert t["steps"][0]["from_k"] == 0 and t["steps"][0]["to_k"] == 2
    # K=2 worse than K=0 by 1% relative: still better than the baseline, but not monotone
    bad = {0: {0: [0.28, 0.28], 1: [0.30, 0.30]}, 2: {0: [0.2828, 0.2828], 1: [0.303, 0.303]}}
    t = _frontier(bad, base)["arms"]["matta_shampoo"]["targets"]
    assert t["every_k_beats_baseline"] and not t["monotone"]
    assert math.isclose(t["steps"][0]["rel_change"], 0.01, rel_tol=1e-6)
    # a seed whose day count is short is left out of the K's mean
    short = {0: {0: [0.29, 0.29], 1: [0.40]}}
    row = _frontier(short, base)["arms"]["matta_shampoo"]["rows"][0]
    assert row["seeds"] == [0] and math.isclose(row["auc_loss_mean"], 0.29)


def test_one_seed_renders_without_a_std():
    """One seed has no std (NaN in memory, null once written as JSON): the table shows the mean alone."""
    fr = _frontier({0: {0: [0.29, 0.29]}, 2: {0: [0.28, 0.28]}}, {0: [0.30, 0.30]})
    for f in (fr, json.loads(json.dumps(json_safe(fr)))):
        md = frontier_markdown(f)
        assert "| 0 | c0 | 100 |" in md and "0.29000 |" in md and "-3.33% |" in md
        assert "±" not in md.split("| 0 | c0 |")[1].splitlines()[0]
