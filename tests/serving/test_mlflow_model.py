"""The Student through MLflow: log -> register -> gate -> `models:/NAME@champion`, loaded in
this process, in a fresh process, and served over HTTP by `mlflow models serve`.

One module-scoped store and one logged model serve all tests here (logging costs seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from recsys_matta.models.standalone import FORMAT as STANDALONE_FORMAT
from recsys_matta.safeload import UnsafeFileError
from recsys_matta.serving.pyfunc import log_student
from recsys_matta.tracking import open_tracker
from recsys_matta.tracking.registry import (
    CANDIDATE,
    CHAMPION,
    gate,
    load_champion,
    load_version,
    register,
    version_info,
    version_tags,
)
from tests.planted import plant
from tests.http_server import free_port, stop, wait_healthy
from tests.serving.tiny import COLUMNS, SPEC, raw_rows, raw_table, reference_probs, tiny_model
from tests.tracking.mlflow_store import fresh_store

pytestmark = pytest.mark.integration

NAME = "matta-student-serving-test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A store with one logged, registered Student that the gate made champion."""
    root = tmp_path_factory.mktemp("serving_store")
    model = tiny_model()
    with fresh_store(root, tmp_path_factory) as uri:
        with open_tracker(root, "serving", "day-1") as tracker:
            model_uri = log_student(tracker, model, SPEC, raw_rows().head(3), step=1)
            version = register(model_uri, NAME, version_tags("2026-11-01", 0.42, 0.45))
            decision = gate(NAME, version, 0.42, None, day="2026-11-02", tracker=tracker)
        yield {
            "uri": uri,
            "root": root,
            "model": model,
            "model_uri": model_uri,
            "version": version,
            "decision": decision,
            "run_id": tracker.run_id,
            "expected": reference_probs(model, raw_table()),
        }


def test_logged_registered_and_champion(champion):
    from mlflow import MlflowClient

    assert champion["model_uri"].startswith("models:/m-")
    assert champion["decision"].moved
    info = version_info(NAME, champion["version"])
    assert sorted(info["aliases"]) == [CANDIDATE, CHAMPION]
    assert {k: info["tags"][k] for k in ("day", "auc_loss", "baseline_auc_loss")} == {
        "day": "2026-11-01",
        "auc_loss": "0.42",
        "baseline_auc_loss": "0.45",
    }
    run = MlflowClient().get_run(champion["run_id"])
    assert run.info.status == "FINISHED"
    assert [o.model_id for o in run.outputs.model_outputs] == [champion["model_uri"].split("/")[-1]]


def test_load_champion_predicts_raw_rows(champion):
    pyfunc = load_champion(NAME)
    assert pyfunc is not None
    assert pyfunc.metadata.get_input_schema().input_names() == COLUMNS
    assert pyfunc.metadata.metadata["spec_name"] == "tiny"
    assert pyfunc.metadata.metadata["weights_format"] == STANDALONE_FORMAT
    got = pyfunc.predict(raw_rows())  # nulls, unseen ids, extra columns
    np.testing.assert_allclose(np.asarray(got), champion["expected"], rtol=0, atol=1e-6)
    student = pyfunc.unwrap_python_model()
    assert student.spec == SPEC
    assert student.model.num_parameters() == champion["model"].num_parameters()


def test_input_example_stored(champion):
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(champion["model_uri"]))
    example = json.loads((local / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"][: len(COLUMNS)] == COLUMNS
    assert len(example["dataframe_split"]["data"]) == 3
    assert (local / "artifacts" / "spec.yaml").is_file()
    assert (local / "artifacts" / "student" / "config.json").is_file()
    assert (local / "artifacts" / "student" / "state_dict.pt").is_file()


def test_planted_pickle_in_a_model_version_is_refused(champion, tmp_path):
    """Someone with write access to the store replaces a version's weights with a pickle whose
    unpickling would create a file: loading the version fails naming the file; nothing runs."""
    import mlflow
    from urllib.parse import urlparse

    name = f"{NAME}-planted"
    with open_tracker(champion["root"], "serving", "planted") as tracker:
        model_uri = log_student(tracker, champion["model"], SPEC, None, step=1)
    version = register(model_uri, name, version_tags("2026-11-01", 0.42, 0.45))
    location = mlflow.get_logged_model(model_uri.split("/")[-1]).artifact_location
    weights = Path(urlparse(location).path) / "artifacts" / "student" / "state_dict.pt"
    assert weights.is_file()
    marker = tmp_path / "marker"
    plant(weights, marker, wrap=False)
    with pytest.raises(UnsafeFileError, match=r"student/state_dict\.pt: refused to load model weights"):
        load_version(name, str(version))
    assert not marker.exists()


def _env(champion) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=champion["uri"],
        OMP_NUM_THREADS="1",
        MLFLOW_MODELS_WORKERS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # uvicorn
    )
    return env


def test_fresh_process_loads_champion_without_torchrec(champion, tmp_path):
    """A new interpreter (only the installed package, no test code) loads the champion and
    scores raw rows read from a Parquet file."""
    import pyarrow.parquet as pq

    pq.write_table(raw_table(), tmp_path / "part-0.parquet")
    code = f"""
import sys, json, numpy as np, mlflow.pyfunc, pyarrow.parquet as pq
model = mlflow.pyfunc.load_model("models:/{NAME}@champion")
rows = pq.read_table({str(tmp_path / "part-0.parquet")!r}).to_pandas()
np.save({str(tmp_path / "probs.npy")!r}, np.asarray(model.predict(rows), dtype=np.float64))
print(json.dumps({{"torchrec": "torchrec" in sys.modules}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(champion), cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), champion["expected"], atol=1e-6)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torchrec": False}, (
        "loading and scoring the Student imported torchrec: serving must not need it"
    )


@pytest.mark.serving
def test_mlflow_models_serve_scores_raw_rows(champion, tmp_path):
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@{CHAMPION}",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    log_file = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        cmd, env=_env(champion), cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: uvicorn and workers die together
    )  # fmt: skip
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log")
        rows = raw_rows()
        payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            body = json.loads(r.read())
        served = np.asarray(body["predictions"], dtype=np.float64)
        local = np.asarray(load_champion(NAME).predict(rows), dtype=np.float64)
        np.testing.assert_allclose(served, local, rtol=0, atol=1e-6)
        np.testing.assert_allclose(served, champion["expected"], rtol=0, atol=1e-6)
    finally:
        stop(proc)
        log_file.close()
