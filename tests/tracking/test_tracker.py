"""Tracking against a real sqlite MLflow store (one fresh copy per test, see mlflow_store.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_matta.tracking import Tracker, open_tracker
from recsys_matta.tracking.params import day_metrics, flatten_metrics, flatten_params
from recsys_matta.tracking.tracker import MlflowTracker, resolve_tracking_uri, sqlite_path


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


# ------------------------------------------------------------------------- pure flattening
def test_flatten_params_nests_names_lists_and_truncates():
    config = {
        "model": {"d_ta": 64, "dims": [4, 8], "name": None},
        "spec": {
            "features": [
                {"name": "user_id", "hash_buckets": 100},
                {"name": "price", "clip": [0.0, 5.0]},
            ]
        },
        "steps": [{"lr": 0.1}, {"lr": 0.01}],
        "bad key!": "x" * 7000,
        "path": Path("/a/b"),
    }
    flat = flatten_params(config)
    assert flat == {
        "model.d_ta": "64",
        "model.dims": "[4, 8]",
        "model.name": "None",
        "spec.features.user_id.name": "user_id",
        "spec.features.user_id.hash_buckets": "100",
        "spec.features.price.name": "price",
        "spec.features.price.clip": "[0.0, 5.0]",
        "steps.0.lr": "0.1",
        "steps.1.lr": "0.01",
        "bad key_": "x" * 5997 + "...",
        "path": "/a/b",
    }


def test_flatten_params_accepts_pydantic_models():
    from recsys_matta.specs import FeatureSpec

    spec = FeatureSpec.model_validate(
        {
            "name": "tiny",
            "labels": {"event": "click"},
            "features": [{"name": "u", "group": "user", "kind": "sparse", "vocab_size": 3}],
        }
    )
    flat = flatten_params({"spec": spec})
    assert flat["spec.name"] == "tiny"
    assert flat["spec.labels.event"] == "click"
    assert flat["spec.features.u.vocab_size"] == "3"


def test_limits_match_mlflow():
    from mlflow.utils import validation

    from recsys_matta.tracking import params, tracker

    assert params.PARAM_VALUE_LIMIT == validation.MAX_PARAM_VAL_LENGTH
    assert params.KEY_LIMIT == validation.MAX_ENTITY_KEY_LENGTH
    assert tracker.TAG_VALUE_LIMIT == validation.MAX_TAG_VAL_LENGTH


def test_flatten_metrics_slash_names_and_types():
    line = {
        "student": {"auc_loss": 0.25, "log_loss": np.float32(0.5)},
        "baseline": {"auc_loss": None},
        "student_rel_improvement": np.array(0.125),
        "ok": True,
    }
    assert flatten_metrics(line) == {
        "student/auc_loss": 0.25,
        "student/log_loss": 0.5,
        "student_rel_improvement": 0.125,
        "ok": 1.0,
    }
    with pytest.raises(TypeError, match="'day'"):
        flatten_metrics({"day": "2026-11-01"})


def test_day_metrics_from_a_day_record():
    from recsys_matta.metrics import ModelMetrics
    from recsys_matta.train.records import DayRecord

    rec = DayRecord(
        day="2026-11-02", day_index=1, eval_label="teacher", eval_rows=8,
        student=ModelMetrics(0.25, 0.5, 1.0, 8), baseline=ModelMetrics(0.3, 0.6, 0.9, 8, event_auc_loss=0.4),
        student_rel_improvement=0.125, loss={"distill": 0.75}, train_rows=8, train_steps=2,
        reader={"rows_read": 9}, seconds={"train": 1.5},
    )  # fmt: skip
    assert day_metrics(rec) == {
        "student/auc_loss": 0.25,
        "student/log_loss": 0.5,
        "student/calibration": 1.0,
        "student/rows": 8.0,
        "student/rel_improvement": 0.125,
        "baseline/auc_loss": 0.3,
        "baseline/log_loss": 0.6,
        "baseline/calibration": 0.9,
        "baseline/rows": 8.0,
        "baseline/event_auc_loss": 0.4,
        "loss/distill": 0.75,
        "reader/rows_read": 9.0,
        "seconds/train": 1.5,
        "eval_rows": 8.0,
        "train_rows": 8.0,
        "train_steps": 2.0,
    }


def test_resolve_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = resolve_tracking_uri(tmp_path)
    assert default == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert sqlite_path(default) == tmp_path.resolve() / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(tmp_path) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri(tmp_path, "sqlite:///x.db") == "sqlite:///x.db"
    assert sqlite_path("http://127.0.0.1:5000") is None


# ------------------------------------------------------------------------- real store
def test_params_metrics_artifacts_read_back(mlflow_store, tmp_path):
    workdir = tmp_path / "work"
    with open_tracker(workdir, "exp-a", "day-1", tags={"stage": "test"}) as tracker:
        assert isinstance(tracker, MlflowTracker) and isinstance(tracker, Tracker)
        tracker.log_params({"model": {"d_ta": 64, "d_student": 16}, "lr": 0.01})
        for day, auc_loss in enumerate([0.30, 0.28, 0.27]):
            tracker.log_metrics({"student": {"auc_loss": auc_loss}, "ta/auc_loss": 0.2}, step=day)
        (tmp_path / "notes.txt").write_text("hello")
        tracker.log_artifact(tmp_path / "notes.txt", "extra")
        tracker.log_dict({"a": 1}, "config.json")
        tracker.log_text("day,auc\n", "table.csv")
        tracker.set_tags({"git": "abc"})
        run_id = tracker.run_id

    run = _client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "day-1"
    assert run.data.params == {"model.d_ta": "64", "model.d_student": "16", "lr": "0.01"}
    assert run.data.tags["stage"] == "test" and run.data.tags["git"] == "abc"
    history = _client().get_metric_history(run_id, "student/auc_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 0.30),
        (1, 0.28),
        (2, 0.27),
    ]
    assert len(_client().get_metric_history(run_id, "ta/auc_loss")) == 3
    files = {a.path for a in _client().list_artifacts(run_id)}
    assert files == {"extra", "config.json", "table.csv"}
    assert [a.path for a in _client().list_artifacts(run_id, "extra")] == ["extra/notes.txt"]
    # artifacts live beside the sqlite file the env var names, not in the cwd
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    local = Path(run.info.artifact_uri.removeprefix("file://")) / "config.json"
    assert json.loads(local.read_text()) == {"a": 1}


def test_embedded_default_store_in_workdir(mlflow_store, tmp_path, monkeypatch):
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copyfile(sqlite_path(mlflow_store), workdir / "mlflow.db")  # skip the migrations
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with open_tracker(workdir, "exp", "run") as tracker:
        tracker.log_metrics({"x": 1.0}, step=3)
    assert tracker.tracking_uri == f"sqlite:///{workdir.resolve()}/mlflow.db"
    import mlflow

    assert mlflow.get_tracking_uri() == tracker.tracking_uri  # registry calls go to the same store
    run = mlflow.MlflowClient(tracker.tracking_uri).get_run(tracker.run_id)
    assert run.data.metrics == {"x": 1.0}
    assert run.info.artifact_uri.startswith((workdir / "mlartifacts").resolve().as_uri())


def test_active_run_is_left_alone_and_becomes_parent(mlflow_store, tmp_path):
    import mlflow

    outer = mlflow.start_run(run_name="notebook")
    tracker = open_tracker(tmp_path, "exp", "child")
    tracker.log_metrics({"m": 2.0}, step=0)
    tracker.close()
    assert mlflow.active_run().info.run_id == outer.info.run_id  # still active, untouched
    child = _client().get_run(tracker.run_id)
    assert child.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert child.info.status == "FINISHED"
    assert _client().get_run(outer.info.run_id).info.status == "RUNNING"
    assert _client().get_run(outer.info.run_id).data.metrics == {}
    mlflow.end_run()
    assert _client().get_run(outer.info.run_id).info.status == "FINISHED"


def test_second_run_is_independent(mlflow_store, tmp_path):
    first = open_tracker(tmp_path, "exp", "first")
    second = open_tracker(tmp_path, "exp", "second")  # while the first is still open
    first.log_metrics({"m": 1.0})
    second.log_metrics({"m": 2.0})
    second.close()
    first.close("FINISHED")
    first.close("FAILED")  # a second close does nothing
    third = open_tracker(tmp_path, "exp", "third")  # after both closed
    third.close()
    ids = {first.run_id, second.run_id, third.run_id}
    assert len(ids) == 3
    runs = {r.info.run_name: r for r in _client().search_runs([first.experiment_id])}
    assert set(runs) == {"first", "second", "third"}
    assert runs["first"].data.metrics == {"m": 1.0}
    assert runs["second"].data.metrics == {"m": 2.0}
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert "mlflow.parentRunId" not in runs["second"].data.tags


def test_exception_marks_run_failed(mlflow_store, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with open_tracker(tmp_path, "exp", "bad") as tracker:
            tracker.log_metrics({"m": 1.0})
            raise RuntimeError("boom")
    assert _client().get_run(tracker.run_id).info.status == "FAILED"
    with pytest.raises(KeyboardInterrupt):
        with open_tracker(tmp_path, "exp", "interrupted") as tracker2:
            raise KeyboardInterrupt
    assert _client().get_run(tracker2.run_id).info.status == "KILLED"


def test_missing_artifact_names_the_path(mlflow_store, tmp_path):
    with open_tracker(tmp_path, "exp", "r") as tracker:
        with pytest.raises(FileNotFoundError, match="nope.png"):
            tracker.log_artifact(tmp_path / "nope.png")


def test_disabled_tracker_is_null_and_does_not_import_mlflow(tmp_path):
    code = (
        "import sys\n"
        "from recsys_matta.tracking import open_tracker, NullTracker, Tracker\n"
        f"t = open_tracker({str(tmp_path)!r}, 'exp', 'r', enabled=False)\n"
        "assert isinstance(t, NullTracker) and isinstance(t, Tracker) and t.run_id is None\n"
        "with t:\n"
        "    t.log_params({'a': 1}); t.log_metrics({'b': 2.0}, step=1); t.set_tags({'c': 3})\n"
        "    t.log_dict({}, 'x.json'); t.log_text('', 'x.txt'); t.log_artifact('missing')\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert not (tmp_path / "mlflow.db").exists()
