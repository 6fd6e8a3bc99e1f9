"""Markdown tables, the generated block of docs/results.md, and merging study folders."""

import json

import pytest

from recsys_matta.errors import UserError
from recsys_matta.study.report import (
    BEGIN,
    END,
    compare,
    comparisons_table,
    merge_studies,
    parse_datasets,
    table3,
    table4,
    write_generated,
)

STATS = {"auc_loss_mean": 0.4, "auc_loss_std": 0.01, "rel_improvement_mean": -0.05, "rel_improvement_std": 0.002, "seeds": [0, 1]}
RESULTS = {
    "baseline": {"student": {**STATS, "rel_improvement_mean": 0.0, "rel_improvement_std": 0.0}},
    "matta_shampoo": {"student": STATS, "ta": {**STATS, "auc_loss_mean": 0.38}},
    "matta_shampoo_noshare": {"student": {**STATS, "auc_loss_std": None}},
}


def test_table3_rows_are_arms_by_models():
    lines = table3(RESULTS).splitlines()
    assert lines[2] == "| Baseline (Student, first-order) | Student | 0.40000 ± 0.01000 | — | 2 |"
    assert lines[3] == "| MatTA w/ Shampoo | Student | 0.40000 ± 0.01000 | -5.00% ± 0.20% | 2 |"
    assert lines[4].startswith("| MatTA w/ Shampoo | TA | 0.38000 ± 0.01000 |")
    assert lines[5].startswith("| MatTA w/ Shampoo, no parameter sharing | Student | 0.40000 |")  # no std
    assert len(lines) == 6


def test_table4_shared_vs_not_shared():
    lines = table4(RESULTS).splitlines()
    assert lines[2].startswith("| Shared (M-nested") and "0.38000 ± 0.01000" in lines[2]
    assert lines[3].startswith("| Not shared | 0.40000 | -5.00% ± 0.20% | – | – |")
    assert table4({"baseline": RESULTS["baseline"]}) is None
    assert table4({k: RESULTS[k] for k in ("baseline", "matta_shampoo")}) is None  # nothing to compare with


def test_generated_block_keeps_hand_written_text(tmp_path):
    path = tmp_path / "results.md"
    write_generated(path, "table v1")
    assert path.read_text().startswith("# Results\n")
    text = path.read_text().replace("_Analysis: to be written._", "My analysis.") + "\nClosing note.\n"
    path.write_text(text)
    write_generated(path, "table v2")
    new = path.read_text()
    assert "My analysis." in new and new.rstrip().endswith("Closing note.")
    assert "table v2" in new and "table v1" not in new
    assert new.count(BEGIN) == 1 and new.count(END) == 1


def test_parse_datasets():
    assert {k: str(v) for k, v in parse_datasets("synthetic=a/b, movielens=c").items()} == {"synthetic": "a/b", "movielens": "c"}
    for bad in ("synthetic", "=a", "a=b,a=c", ""):
        with pytest.raises(UserError):
            parse_datasets(bad)


def test_merge_copies_figures_and_writes_json(tmp_path):
    study = tmp_path / "study"
    (study / "figures").mkdir(parents=True)
    (study / "figures" / "auc_loss_per_day.png").write_bytes(b"png")
    (study / "results.json").write_text(json.dumps({"synthetic": RESULTS}))
    meta = {"days": ["d1", "d2"], "scored_days": ["d2"], "figures": {"auc_loss_per_day": "figures/auc_loss_per_day.png"}}
    (study / "study.json").write_text(json.dumps(meta))
    (study / "tuning.md").write_text("Searched 12 configs in 40 minutes.")
    docs = tmp_path / "docs"
    merged = merge_studies({"synth": study}, docs)
    assert json.loads((docs / "results.json").read_text()) == {"synth": RESULTS} == merged
    assert (docs / "figures" / "synth-auc_loss_per_day.png").read_bytes() == b"png"
    md = (docs / "results.md").read_text()
    assert "## synth" in md and "](figures/synth-auc_loss_per_day.png)" in md
    assert "### Search and budget" in md and "Searched 12 configs in 40 minutes." in md
    with pytest.raises(UserError, match="no results.json"):
        merge_studies({"x": tmp_path / "nothing"}, docs)


def test_paired_comparisons_by_seed():
    a = {"seeds": [0, 1, 2], "auc_loss_per_seed": [0.20, 0.21, 0.19]}
    b = {"seeds": [0, 1, 2, 3], "auc_loss_per_seed": [0.25, 0.24, 0.26, 0.10]}  # seed 3: A lacks it
    c = compare(a, b)
    assert c["seeds"] == [0, 1, 2] and c["a_better_seeds"] == 3
    assert c["diff"] == pytest.approx(0.20 - 0.25)
    rel = [(0.20 - 0.25) / 0.25, (0.21 - 0.24) / 0.24, (0.19 - 0.26) / 0.26]
    assert c["rel_mean"] == pytest.approx(sum(rel) / 3)
    assert c["sigmas"] == pytest.approx(0.05 / 0.01)  # both arms have sample std 0.01
    assert compare(a, {"seeds": [5], "auc_loss_per_seed": [0.3]}) is None
    res = {"matta_shampoo": {"student": a}, "shampoo_only": {"student": b}}
    lines = comparisons_table(res).splitlines()
    assert len(lines) == 3
    assert lines[2] == "| MatTA w/ Shampoo Student vs Shampoo-only Student | -0.05000 | -19.81% ± 7.21% | 3 of 3 seeds | +5.00 |"
    assert comparisons_table({"matta_shampoo": {"student": a}}) is None
