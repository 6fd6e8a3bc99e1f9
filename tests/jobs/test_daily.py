"""The daily pipeline on 3 tiny days against a real sqlite MLflow store in tmp_path."""

import json
import subprocess
import sys

import pytest
import torch

from recsys_matta.data.reader import DayReader
from recsys_matta.jobs.daily import run_daily
from recsys_matta.jobs.scoring import score_batches
from recsys_matta.models.extract import student_choice, ta_choice
from tests.tiny import DAYS, SPEC_PATH, TINY

pytestmark = pytest.mark.integration


def _client(workdir):
    from mlflow import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_backfill_registers_gates_and_reports(synthetic_root, tmp_path):
    work = tmp_path / "run"
    out = run_daily(SPEC_PATH, synthetic_root, work, f"{DAYS[0]}..{DAYS[1]}", overrides=TINY)
    assert out.days == DAYS[:2] and len(out.decisions) == 1  # v2 is judged by the next day's run
    c = _client(work)
    # one run, per-day metrics with step = day index
    run = c.get_run(out.run_id)
    hist = c.get_metric_history(out.run_id, "student/auc_loss")
    assert sorted(m.step for m in hist) == [0, 1]
    records = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [m.value for m in sorted(hist, key=lambda m: m.step)] == pytest.approx(
        [r["student"]["auc_loss"] for r in records]
    )
    assert {"ta/auc_loss", "baseline/auc_loss", "student/rel_improvement", "loss/total", "reader/rows_read"} <= set(run.data.metrics)
    assert run.data.params["config.optim.dense"] == "shampoo"
    # two versions, each tagged; champion follows the gate's decisions
    versions = sorted(c.search_model_versions("name='matta-student'"), key=lambda v: int(v.version))
    assert [v.tags["day"] for v in versions] == DAYS[:2]
    assert float(versions[1].tags["auc_loss"]) == pytest.approx(records[1]["student"]["auc_loss"])
    assert float(versions[1].tags["baseline_auc_loss"]) == pytest.approx(records[1]["baseline"]["auc_loss"])
    assert out.decisions[0].moved and out.decisions[0].version == 1  # the first version is the champion
    assert int(c.get_model_version_by_alias("matta-student", "champion").version) == 1
    assert int(c.get_model_version_by_alias("matta-student", "candidate").version) == 2
    assert "gate.day" not in versions[1].tags  # not judged yet: no day after DAYS[1] was run
    # the Mix'n'Match report on the held-out day: K=0 is the Student, all-wide the TA
    rep = out.report
    assert rep["days"] == [DAYS[2]] and rep["held_out"]
    rows = {r["choice"]: r for r in rep["models"]}
    from recsys_matta.jobs.commands import load_trainer

    tr = load_trainer(SPEC_PATH, synthetic_root, work, None, [])
    m = tr.model.eval()
    ref = score_batches(
        {"s": lambda b: m(b)[0], "t": lambda b: m(b)[1]}, DayReader(tr.spec, synthetic_root, 1024), [DAYS[2]], "teacher"
    )
    assert rows[student_choice(m.cfg).label]["auc_loss"] == pytest.approx(ref["s"].auc_loss, abs=1e-6)
    assert rows[ta_choice(m.cfg).label]["auc_loss"] == pytest.approx(ref["t"].auc_loss, abs=1e-6)
    assert [r for r in rep["models"] if r["k"] == 0][0]["is_student"]
    for f in ("report.json", "report.md", "frontier.png"):
        assert (work / "mixnmatch" / f).stat().st_size > 0
    arts = {a.path for a in c.list_artifacts(out.run_id, "mixnmatch")}
    assert "mixnmatch/frontier.png" in arts

    # re-running a finished day is a no-op: no new version, no gate
    again = run_daily(SPEC_PATH, synthetic_root, work, DAYS[1], overrides=TINY)
    assert again.decisions == []
    assert len(c.search_model_versions("name='matta-student'")) == 2
    assert "gate.day" not in c.get_model_version("matta-student", "2").tags


def test_failed_day_registers_nothing(synthetic_root, tmp_path, monkeypatch):
    from recsys_matta.distributed.sharded import ShardedEngine
    from recsys_matta.train.step import NonFiniteLossError

    work = tmp_path / "run"
    run_daily(SPEC_PATH, synthetic_root, work, DAYS[0], overrides=TINY)

    def explode(self, batches, first_step, day):
        raise NonFiniteLossError(f"non-finite loss on day {day}")
        yield

    monkeypatch.setattr(ShardedEngine, "train", explode)
    with pytest.raises(NonFiniteLossError):
        run_daily(SPEC_PATH, synthetic_root, work, DAYS[1], overrides=TINY)
    c = _client(work)
    assert len(c.search_model_versions("name='matta-student'")) == 1
    failed = [r for r in c.search_runs([r.experiment_id for r in c.search_experiments()]) if r.info.status == "FAILED"]
    assert len(failed) == 1


def test_cli_missing_day_exits_nonzero_with_message(synthetic_root, tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "recsys_matta", "daily", "--spec", str(SPEC_PATH), "--data", str(synthetic_root),
         "--day", "2030-01-01", "--workdir", str(tmp_path / "w"), *TINY],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode != 0
    assert "2030-01-01" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "w" / "mlflow.db").exists()


def test_champion_in_a_fresh_process_matches_the_training_side_student(synthetic_root, tmp_path):
    """A real client: load models:/matta-student@champion with mlflow.pyfunc in a new process,
    predict on raw rows read from a Parquet partition; equals the trained Student to 1e-5."""
    import numpy as np

    from recsys_matta.jobs.commands import load_trainer

    work = tmp_path / "run"
    run_daily(SPEC_PATH, synthetic_root, work, DAYS[0], overrides=[*TINY, "daily.mixnmatch=false"])
    out = tmp_path / "pred.npy"
    script = f"""
import glob, numpy as np, pyarrow.parquet as pq, mlflow.pyfunc
mlflow.set_tracking_uri("sqlite:///{work / 'mlflow.db'}")
m = mlflow.pyfunc.load_model("models:/matta-student@champion")
files = sorted(glob.glob("{synthetic_root}/day={DAYS[1]}/*.parquet"))
df = __import__("pandas").concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
np.save("{out}", np.asarray(m.predict(df.drop(columns=["teacher_prob", "click"]))))
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    served = np.load(out)

    tr = load_trainer(SPEC_PATH, synthetic_root, work, None, [])
    m = tr.model.eval()
    with torch.no_grad():
        ref = torch.cat([torch.sigmoid(m(b)[0]) for b in DayReader(tr.spec, synthetic_root, 512).iter_day(DAYS[1])])
    assert served.shape == ref.shape
    np.testing.assert_allclose(served, ref.numpy(), atol=1e-5, rtol=0)
