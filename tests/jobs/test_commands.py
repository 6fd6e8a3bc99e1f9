"""`matta compare` / `matta extract` / `matta register` on a finished run, and the daily job
against a real `mlflow server` over HTTP (the compose stack's set-up, without Docker)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from rich.console import Console

from recsys_matta.errors import UserError
from recsys_matta.jobs.commands import compare, extract_command, register_latest
from recsys_matta.jobs.daily import run_daily
from tests.tiny import DAYS, SPEC_PATH, TINY

pytestmark = pytest.mark.integration


def test_compare_extract_register_on_a_finished_run(synthetic_root, tmp_path):
    from mlflow import MlflowClient

    work = tmp_path / "run"
    run_daily(SPEC_PATH, synthetic_root, work, f"{DAYS[0]}..{DAYS[1]}", overrides=[*TINY, "daily.mixnmatch=false"])
    console = Console(width=150, record=True)

    rows = compare(SPEC_PATH, synthetic_root, work, f"{DAYS[0]}..{DAYS[1]}", None, [], console)
    records = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["day"] for r in rows] == DAYS[:2]
    assert rows[1]["student"] == pytest.approx(records[1]["student"]["auc_loss"])
    assert rows[1]["baseline"] == pytest.approx(records[1]["baseline"]["auc_loss"])
    assert 0.0 < rows[1]["champion"] < 0.5  # the registered champion re-scored on the day

    report = extract_command(SPEC_PATH, synthetic_root, work, None, [2, 4], "10000", None, [], console)
    assert report["days"] == [DAYS[2]]  # default: the day after the last trained day
    sizes = sorted(r["dense_params"] for r in report["models"])
    best = report["budget"]["best"]
    assert best["dense_params"] <= 10_000
    fits = [r for r in report["models"] if r["dense_params"] <= 10_000]
    assert best["auc_loss"] == min(r["auc_loss"] for r in fits)
    assert sizes[0] == next(r for r in report["models"] if r["is_student"])["dense_params"]
    c = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}", registry_uri=f"sqlite:///{work / 'mlflow.db'}")
    by_k = {r["k"]: r for r in report["models"] if r["k"] is not None}
    for k in (2, 4):  # one registered model, each size under its own alias, its cost as tags
        v = c.get_model_version_by_alias("matta-student-elastic", f"wnw-k{k}")
        assert v.tags["k"] == str(k) and int(v.tags["dense_params"]) == by_k[k]["dense_params"]
        assert float(v.tags["flops_per_example"]) == pytest.approx(by_k[k]["flops_per_example"])
        assert float(v.tags["latency_ms_per_1000"]) > 0
    assert by_k[2]["flops_per_example"] < by_k[4]["flops_per_example"]

    # a FLOP budget and a latency budget pick within their own column
    flops = extract_command(SPEC_PATH, synthetic_root, work, None, [], "flops=" + str(by_k[2]["flops_per_example"]), None, [], console)
    assert flops["budget"]["best"]["flops_per_example"] <= by_k[2]["flops_per_example"]
    slow = max(r["latency_ms_per_1000"] for r in flops["models"])
    lat = extract_command(SPEC_PATH, synthetic_root, work, None, [], f"latency_ms={slow}", None, [], console)
    assert lat["budget"]["best"]["auc_loss"] == min(r["auc_loss"] for r in lat["models"] if r["latency_ms_per_1000"] <= slow)
    with pytest.raises(UserError, match="unknown budget 'watts'"):
        extract_command(SPEC_PATH, synthetic_root, work, None, [], "watts=3", None, [], console)

    before = len(c.search_model_versions("name='matta-student'"))
    register_latest(SPEC_PATH, synthetic_root, work, None, [], console)
    assert len(c.search_model_versions("name='matta-student'")) == before + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_daily_job_against_an_mlflow_server_over_http(synthetic_root, tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.time() < deadline, "mlflow server not healthy after 120 s"
            time.sleep(0.5)
        out = run_daily(
            SPEC_PATH, synthetic_root, tmp_path / "w", DAYS[0], overrides=[*TINY, "daily.mixnmatch=false"],
            tracking_uri=uri,
        )
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=uri, registry_uri=uri)
        assert c.get_run(out.run_id).data.metrics["student/auc_loss"] > 0
        assert int(c.get_model_version_by_alias("matta-student", "champion").version) == 1
        assert not (tmp_path / "w" / "mlflow.db").exists()  # nothing went to the embedded store
        assert any((tmp_path / "server-artifacts").rglob("MLmodel"))  # artifacts went via the server
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
