"""`matta study --quick` end to end on 3 tiny synthetic days (2 seeds, one job per arm and seed, two
worker processes), then `matta study-report`. Checks the report's STRUCTURE, not the numbers."""

import json

import pytest
from typer.testing import CliRunner

from recsys_matta.cli import app
from recsys_matta.study.arms import ARMS
from recsys_matta.study.results import records_by_day
from tests.tiny import DAYS, SPEC_PATH

pytestmark = pytest.mark.integration

ARM_MODELS = {"baseline": ["student"], **{a.name: list(a.models) for a in ARMS}}
STATS = {"auc_loss_mean", "auc_loss_std", "rel_improvement_mean", "rel_improvement_std", "seeds", "days"}


@pytest.fixture(autouse=True)
def _embedded_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def _client(workdir):
    from mlflow import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_quick_study_report_structure_resume_and_merge(synthetic_root, tmp_path):
    out = tmp_path / "study"
    args = ["study", "--spec", str(SPEC_PATH), "--data", str(synthetic_root), "--out", str(out), "--quick"]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "[start] matta_shampoo/seed0" in res.output and "ETA" in res.output

    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["synthetic"]
    ds = results["synthetic"]
    assert {a: list(m) for a, m in ds.items()} == ARM_MODELS
    for arm, models in ds.items():
        for model, s in models.items():
            assert STATS <= set(s), (arm, model)
            assert s["seeds"] == [0, 1] and s["days"] == DAYS[1:] and s["all_days"] == DAYS
            assert 0 < s["auc_loss_mean"] < 1 and s["auc_loss_std"] >= 0
    assert ds["baseline"]["student"]["rel_improvement_mean"] == 0.0
    # the numbers come from the jobs' records: the host job's Student, seed 0, last half
    recs = records_by_day(out / "runs" / "matta_shampoo" / "seed0")
    seed0 = sum(recs[d].student.auc_loss for d in DAYS[1:]) / 2
    assert ds["matta_shampoo"]["student"]["auc_loss_per_seed"][0] == pytest.approx(seed0)
    base0 = sum(recs[d].baseline.auc_loss for d in DAYS[1:]) / 2
    assert ds["matta_shampoo"]["student"]["rel_improvement_per_seed"][0] == pytest.approx((seed0 - base0) / base0)
    # the elastic frontier: every MatTA arm with one shared tower, scored like the arms (K=0, the
    # extracted Student, reproduces the arm's own progressive-validation Student; same baseline)
    meta = json.loads((out / "study.json").read_text())
    frontier = meta["elastic"]["arms"]
    assert set(frontier) == {"matta_adam", "matta_shampoo", "matta_shampoo_endpoints", "matta_shampoo_random", "matta_shampoo_nested_init"}
    rows = {r["k"]: r for r in frontier["matta_shampoo"]["rows"]}
    assert rows[0]["auc_loss_per_seed"][0] == pytest.approx(seed0, rel=1e-4)
    assert rows[0]["rel_improvement_per_seed"][0] == pytest.approx((seed0 - base0) / base0, rel=1e-3, abs=1e-6)
    assert max(rows) == frontier["matta_shampoo"]["rows"][-1]["k"] and rows[max(rows)]["flops_per_example"] > rows[0]["flops_per_example"]
    assert "### Elastic Students" in (out / "results.md").read_text()
    # the baseline is trained once per seed, in the host arm only
    assert records_by_day(out / "runs" / "matta_adam" / "seed1")[DAYS[0]].baseline is None

    md = (out / "results.md").read_text()
    assert sum(line.startswith("| MatTA w/ Shampoo |") for line in md.splitlines()) == 2 + 2  # Table 3 + event table
    assert "| Shared (M-nested" in md and "| Not shared |" in md
    assert "(Student) | 0 |" in md and "(TA) |" in md  # Mix'n'Match rows (wide-narrow-wide in quick mode)
    for f in ("figures/auc_loss_per_day.png", "figures/preconditioner.png", "mixnmatch/frontier.png"):
        assert (out / f).stat().st_size > 0 and f"]({f})" in md
    meta = json.loads((out / "study.json").read_text())
    assert meta["mixnmatch"]["trained_through"] == DAYS[1] and meta["mixnmatch"]["days"] == [DAYS[2]]
    assert meta["preconditioner"]["student_block"] == [64, 8 * 12] and meta["preconditioner"]["shape"] == [256, 16 * 12]
    assert {j["status"] for j in meta["jobs"].values()} == {"done"} and len(meta["jobs"]) == 2 * len(ARMS)

    c = _client(out)
    (run,) = c.search_runs([c.get_experiment_by_name("matta-study").experiment_id])
    assert run.data.metrics["matta_shampoo/student/auc_loss_mean"] == pytest.approx(ds["matta_shampoo"]["student"]["auc_loss_mean"])
    arts = {a.path for a in c.list_artifacts(run.info.run_id)} | {a.path for a in c.list_artifacts(run.info.run_id, "figures")}
    assert {"results.json", "results.md", "figures/preconditioner.png"} <= arts

    # resume: every job is finished, nothing runs, the same numbers come out
    res = CliRunner().invoke(app, [*args, "--no-tracking"], catch_exceptions=False)
    assert res.exit_code == 0 and "finished already, skipped" in res.output and "[start]" not in res.output
    assert json.loads((out / "results.json").read_text()) == results

    (out / "tuning.md").write_text("Tuned nothing (smoke test).")
    docs = tmp_path / "docs"
    res = CliRunner().invoke(app, ["study-report", "--datasets", f"synth={out}", "--out", str(docs)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads((docs / "results.json").read_text()) == {"synth": ds}
    assert sorted(p.name for p in (docs / "figures").iterdir()) == [
        "synth-auc_loss_per_day.png", "synth-elastic_frontier.png", "synth-frontier.png", "synth-preconditioner.png"
    ]
    assert "Tuned nothing (smoke test)." in (docs / "results.md").read_text()
