"""The Airflow pipeline's tests. Airflow lives in its own environment (pipelines/.venv, made by
`make airflow-env`, which `make test` runs first), so the tests that need it start
tests/pipelines/airflow_driver.py with that interpreter; they are skipped, with the reason, only
when the environment is missing. The config and command tests below need no Airflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "pipelines"
AIRFLOW_PY = PIPELINES / ".venv" / "bin" / "python"
DRIVER = Path(__file__).with_name("airflow_driver.py")

needs_airflow = pytest.mark.skipif(
    not AIRFLOW_PY.exists(),
    reason=f"no Airflow environment at {AIRFLOW_PY.parent.parent}: run `make airflow-env` (make test does)",
)

if str(PIPELINES) not in sys.path:  # matta_pipeline (config, commands) imports without Airflow
    sys.path.insert(0, str(PIPELINES))


def airflow_env(home: Path, config: Path) -> dict[str, str]:
    """The environment of an Airflow process with its own sqlite DB under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(PIPELINES / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        MATTA_PIPELINE_CONFIG=str(config),
        OMP_NUM_THREADS="1",
    )
    return env


def migrate(env: dict[str, str]) -> None:
    p = subprocess.run([str(AIRFLOW_PY.parent / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def driver(env: dict[str, str], *args: str, timeout: float = 600) -> tuple[dict, str]:
    """Run airflow_driver.py in the Airflow env: (its JSON result, its whole output)."""
    p = subprocess.run([str(AIRFLOW_PY), str(DRIVER), *args], env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    lines = [x for x in p.stdout.splitlines() if x.startswith("DRIVER-RESULT ")]
    assert p.returncode == 0 and lines, f"driver {args} exited {p.returncode}:\n{out[-6000:]}"
    return json.loads(lines[-1][len("DRIVER-RESULT ") :]), out
