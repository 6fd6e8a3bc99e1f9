"""The pipeline's config and the commands its tasks run (no Airflow needed), and `matta
day-ready`, the sensor's command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from tests.pipelines.conftest import PIPELINES, REPO
from tests.tiny import SPEC_PATH


def test_checked_in_config_loads_and_holds_no_secrets(monkeypatch):
    from matta_pipeline.config import load_config

    monkeypatch.delenv("MATTA_PIPELINE_CONFIG", raising=False)
    cfg = load_config()
    assert cfg.dag.dag_id == "matta_daily" and cfg.dag.schedule == "@daily"
    assert cfg.train.runner == "local" and cfg.sensor.require in ("success", "rows")
    def strings(x):  # every key and value of the file (comments aside)
        if isinstance(x, dict):
            return [s for k, v in x.items() for s in (str(k), *strings(v))]
        return [s for v in x for s in strings(v)] if isinstance(x, list) else [str(x)]

    found = " ".join(strings(yaml.safe_load((PIPELINES / "config.yaml").read_text()))).lower()
    for word in ("password", "secret", "token", "apikey", "api_key"):
        assert word not in found
    assert not re.search(r"://[^/\s]*@", found)  # no user:password@host in a URI


def test_env_var_points_at_another_file_and_bad_values_are_rejected(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from matta_pipeline.config import load_config

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"matta": {"workdir": str(tmp_path / "w"), "overrides": ["preset=small"]}}))
    monkeypatch.setenv("MATTA_PIPELINE_CONFIG", str(p))
    cfg = load_config()
    assert cfg.path(cfg.matta.workdir) == str(tmp_path / "w")
    assert cfg.path(cfg.matta.spec) == str(REPO / "feature_specs" / "synthetic.yaml")  # relative: the repo root
    for bad in ({"sensor": {"require": "maybe"}}, {"matta": {"overrides": ["preset"]}}, {"nope": 1},
                {"retry": {"retries": {"trian": 2}}}, {"train": {"runner": "docker"}}):  # fmt: skip
        p.write_text(yaml.safe_dump(bad))
        with pytest.raises(ValidationError):
            load_config()


def test_stage_commands_share_the_flags_and_template_the_day(tmp_path):
    from matta_pipeline import tasks
    from matta_pipeline.config import PipelineConfig

    cfg = PipelineConfig.model_validate(
        {"matta": {"executable": "/opt/m/bin/matta", "data": "/d", "workdir": "/w", "overrides": ["preset=small"],
                   "tracking_uri": "http://mlflow:5000", "register_elastic": [2, 4]}}
    )  # fmt: skip
    for stage in ("gate", "train", "register", "extract", "report"):
        argv = shlex.split(tasks.local_stage_command(cfg, stage))
        assert argv[:2] == ["env", "MLFLOW_TRACKING_URI=http://mlflow:5000"] and argv[2:4] == ["/opt/m/bin/matta", "daily"]
        assert argv[argv.index("--stage") + 1] == stage and argv[argv.index("--day") + 1] == "{{ data_interval_start | ds }}"
        assert argv[argv.index("--workdir") + 1] == "/w" and argv[-1] == "preset=small"
        assert ("--register-elastic" in argv) == (stage == "extract")
    sensor = shlex.split(tasks.sensor_command(cfg))
    assert sensor[:2] == ["/opt/m/bin/matta", "day-ready"] and sensor[sensor.index("--require") + 1] == "success"
    assert tasks.container_train_args(cfg) == ["--stage", "train", "preset=small"]
    env = tasks.container_env(cfg, "/data", "/workdir", "/spec.yaml", {})
    assert env["DAY"] == "{{ data_interval_start | ds }}" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def _day_ready(data, day, *extra):
    p = subprocess.run(
        [sys.executable, "-m", "recsys_matta", "day-ready", "--spec", str(SPEC_PATH), "--data", str(data), "--day", day, *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return p.returncode, p.stdout + p.stderr


def test_day_ready_marker_and_rows_rules(synthetic_root, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "day=2026-01-01", data / "day=2026-01-01")
    (data / "day=2026-01-02").mkdir()
    assert _day_ready(data, "2026-01-03")[0] == 1  # no folder yet
    code, out = _day_ready(data, "2026-01-01")
    assert code == 1 and "_SUCCESS" in out  # rows, but no marker
    assert _day_ready(data, "2026-01-01", "--require", "rows")[0] == 0
    (data / "day=2026-01-01" / "_SUCCESS").touch()
    assert _day_ready(data, "2026-01-01")[0] == 0
    # an empty folder, then a file without rows: not ready by rows
    assert _day_ready(data, "2026-01-02", "--require", "rows")[0] == 1
    t = pq.read_table(next((data / "day=2026-01-01").glob("*.parquet")))
    pq.write_table(t.slice(0, 0), data / "day=2026-01-02" / "part-0.parquet")
    code, out = _day_ready(data, "2026-01-02", "--require", "rows")
    assert code == 1 and "1 file(s)" in out
    assert _day_ready(data, "2026-13-01")[0] == 2  # not a day: an error, not "not yet"
