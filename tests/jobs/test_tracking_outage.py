"""The tracking server stops right after a day's checkpoint: the job fails fast with one line
naming the server, its run ends FAILED, and the next run registers the candidate it missed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys_matta.cli import main
from tests.http_server import free_port, stop, wait_healthy
from tests.tiny import DAYS, SPEC_PATH, TINY

pytestmark = pytest.mark.integration


def _server(tmp_path: Path, port: int) -> subprocess.Popen:
    log = tmp_path / f"server-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env={**__import__("os").environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    wait_healthy(proc, f"http://127.0.0.1:{port}/health", log)
    return proc


def _daily(capsys, workdir: Path, data: Path, day: str) -> tuple[int, str, str]:
    args = ["daily", "--spec", str(SPEC_PATH), "--data", str(data), "--workdir", str(workdir), "--day", day,
            *TINY, "daily.mixnmatch=false", "tracking.http_retries=1", "tracking.http_timeout_s=5"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_server_down_mid_job_fails_fast_and_the_next_run_catches_up(synthetic_root, tmp_path, capsys, monkeypatch):
    import recsys_matta.online.trainer as trainer_mod

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    workdir = tmp_path / "w"
    server = _server(tmp_path, port)
    try:
        save = trainer_mod.save_checkpoint

        def save_then_stop_the_server(path, state):
            save(path, state)
            stop(server)  # right after the day's checkpoint

        monkeypatch.setattr(trainer_mod, "save_checkpoint", save_then_stop_the_server)
        t0 = time.monotonic()
        code, out, err = _daily(capsys, workdir, synthetic_root, DAYS[0])
        elapsed = time.monotonic() - t0
        assert code == 1, err[-3000:]
        (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert f"MLflow tracking server {uri}: connection refused" in line and "next run" in line
        assert "Traceback" not in err and elapsed < 90, elapsed
        assert (workdir / "checkpoints" / f"day={DAYS[0]}.pt").is_file()
        assert (workdir / ".mlflow_unfinished.json").is_file()
        assert (workdir / "pending_registration.json").is_file()

        monkeypatch.setattr(trainer_mod, "save_checkpoint", save)
        server = _server(tmp_path, port)  # back, same store
        code, out, err = _daily(capsys, workdir, synthetic_root, DAYS[1])
        assert code == 0, err[-3000:]
        assert f"registered matta-student v1 (trained through {DAYS[0]}) as candidate (catch-up" in out
        assert f"registered matta-student v2 (trained through {DAYS[1]}) as candidate" in out
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=uri, registry_uri=uri)
        days = {mv.tags["day"]: int(mv.version) for mv in c.search_model_versions("name='matta-student'")}
        assert days == {DAYS[0]: 1, DAYS[1]: 2}  # every day's version, once
        runs = c.search_runs([c.get_experiment_by_name("matta").experiment_id], order_by=["start_time ASC"])
        assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
        assert not (workdir / ".mlflow_unfinished.json").exists()
        assert not (workdir / "pending_registration.json").exists()
    finally:
        if server.poll() is None:
            stop(server)
        from tests.tracking.mlflow_store import reset_mlflow_globals

        reset_mlflow_globals()
