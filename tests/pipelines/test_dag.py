"""The DAG in Airflow (its own environment, driven through tests/pipelines/airflow_driver.py):
its structure, and one end-to-end backfill of 5 tiny synthetic days run as the scheduler runs
them (SCHEDULED runs, one after another, sqlite Airflow DB, sqlite MLflow in the workdir):

* days 1-3 are good: every task succeeds, the days run in order and the delayed gate moves the
  champion on day 3 (day 2's candidate beats day 1's champion on day 3, which neither has seen);
* day 2's train task is SIGKILLed right after its checkpoint landed (tests/pipelines/
  matta_wrapper.sh): Airflow retries it and the retry trains nothing twice;
* day 4's labels are all null: its train task fails at once (matta exit 2, not retried) and
  day 5's run is blocked before its sensor: nothing of day 5 runs.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from tests.pipelines.conftest import DRIVER, PIPELINES, REPO, airflow_env, driver, migrate, needs_airflow
from tests.tiny import SPEC_PATH, TINY

pytestmark = needs_airflow

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
GOOD, BAD, AFTER_BAD = DAYS[:3], DAYS[3], DAYS[4]
KILL_DAY = DAYS[1]
STAGES = ["wait_for_day", "gate", "train", "register", "extract", "report"]


def _config(tmp: Path, matta: Path, data: Path, workdir: Path) -> Path:
    cfg = {
        "dag": {"start_date": DAYS[0]},
        "matta": {
            "executable": str(matta),
            "spec": str(SPEC_PATH),
            "data": str(data),
            "workdir": str(workdir),
            "overrides": [*TINY, "daily.mixnmatch_all_max=0"],
            "register_elastic": [2],
        },
        "sensor": {"require": "success", "mode": "poke", "poke_interval_s": 1, "timeout_s": 60},
        "retry": {"retry_delay_s": 0, "max_retry_delay_s": 0},
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_dag_integrity(tmp_path):
    config = _config(tmp_path, tmp_path / "matta", tmp_path / "data", tmp_path / "run")
    env = airflow_env(tmp_path / "airflow", config)
    migrate(env)
    res, out = driver(env, "integrity", timeout=300)
    assert res["import_errors"] == {} and res["dag_ids"] == ["matta_daily"], out[-3000:]
    assert res["timetable"] == "CronDataIntervalTimetable"  # @daily as [D, D+1): the run of D starts after D
    assert res["catchup"] is True and res["max_active_runs"] == 1
    assert res["start_date"].startswith(DAYS[0])
    assert res["topological"] == STAGES
    assert res["modules"] == []  # the DAG file imports neither torch, torchrec, mlflow nor recsys_matta
    tasks = res["tasks"]
    assert set(tasks) == set(STAGES)
    for i, t in enumerate(STAGES):
        assert tasks[t]["depends_on_past"] is True, t
        if i:
            assert STAGES[i - 1] in tasks[t]["upstream"], t
    assert tasks["wait_for_day"]["type"] == "BashSensor" and tasks["wait_for_day"]["wait_for_downstream"] is True
    assert "wait_for_day" in tasks["report"]["upstream"]  # day D+1 waits for day D's last task
    for t in STAGES[1:]:
        assert tasks[t]["retries"] > 0 and tasks[t]["retry_exponential_backoff"], t
        assert f"--stage {t}" in tasks[t]["command"] and "{{ data_interval_start | ds }}" in tasks[t]["command"]


def _make_data(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys_matta.data.synthetic import generate

    generate(out=root, days=len(DAYS), rows_per_day=1200, seed=11, start_date=date(2026, 1, 1), progress=False)
    for path in (root / f"day={BAD}").glob("*.parquet"):  # a broken upstream job: no labels at all
        t = pq.read_table(path)
        i = t.schema.get_field_index("teacher_prob")
        t = t.set_column(i, pa.field("teacher_prob", t.schema.field(i).type, nullable=True), pa.nulls(len(t), t.schema.field(i).type))
        pq.write_table(t, path)
    for day in DAYS:
        (root / f"day={day}" / "_SUCCESS").touch()


def _calls(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()]


@pytest.mark.integration  # Airflow + matta processes over 5 days (~3 min): slow, not in make test-fast
def test_backfill_end_to_end(tmp_path):
    data, workdir = tmp_path / "data", tmp_path / "run"
    _make_data(data)
    real = tmp_path / "matta-real"  # the project's matta, this checkout's code
    real.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m recsys_matta "$@"\n')
    real.chmod(real.stat().st_mode | stat.S_IEXEC)
    wrapper = Path(__file__).with_name("matta_wrapper.sh")
    config = _config(tmp_path, wrapper, data, workdir)
    env = airflow_env(tmp_path / "airflow", config)
    env.update(
        REAL_MATTA=str(real), CALLS_LOG=str(tmp_path / "calls.log"), KILL_DAY=KILL_DAY,
        KILL_MARK=str(tmp_path / "killed"), KILL_WORKDIR=str(workdir),
    )  # fmt: skip
    migrate(env)
    res, out = driver(env, "run", *DAYS, timeout=1500)
    tail = out[-8000:]

    # days 1-3: every task succeeded, in scheduled runs
    for day in GOOD:
        r = res[day]
        assert r["blocked"] is None and r["state"] == "success" and r["run_type"] == "scheduled", (day, r, tail)
        assert {t: ti["state"] for t, ti in r["tis"].items()} == dict.fromkeys(STAGES, "success"), (day, r)
    # ... in order: each day's first task started after the previous day's last one ended
    for a, b in zip(GOOD, GOOD[1:] + [BAD]):
        assert res[a]["tis"]["report"]["end"] <= res[b]["tis"]["wait_for_day"]["start"], (a, b)
    calls = _calls(tmp_path / "calls.log")
    trained = [c[2] for c in calls if c[0] == "start" and c[1] == "train"]
    assert trained == [DAYS[0], KILL_DAY, KILL_DAY, DAYS[2], BAD], calls

    # the kill: the checkpoint was written, the task died (137) and was retried; the retry trained
    # nothing: one record per day, the day's metrics in its MLflow run
    assert ["killed", "train", KILL_DAY] == [c[:3] for c in calls if c[0] == "killed"][0][:3]
    assert res[KILL_DAY]["tis"]["train"]["try_number"] == 2
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert [r["day"] for r in records] == GOOD, records
    day2 = json.loads((workdir / "reports" / f"day={KILL_DAY}.json").read_text())
    assert day2["trained"] and day2["student_auc_loss"] == pytest.approx(records[1]["student"]["auc_loss"])

    # the delayed gate: v1 champion on registration, v2 (trained through day 2) judged on day 3
    reps = {d: json.loads((workdir / "reports" / f"day={d}.json").read_text()) for d in GOOD}
    assert reps[DAYS[0]]["champion"] == 1 and reps[DAYS[1]]["champion"] == 1 and reps[DAYS[1]]["candidate"] == 2
    gate3 = reps[DAYS[2]]["gate"]
    assert gate3 is not None and gate3["version"] == 2, reps[DAYS[2]]
    assert reps[DAYS[2]]["champion"] == 2, f"the gate on day 3 did not move the champion: {gate3}"
    assert reps[DAYS[2]]["candidate"] == 3 and reps[DAYS[2]]["elastic"] == {"wnw-k2": 3}

    # day 4: train failed at once (exit 2: not retried), nothing after it ran
    r = res[BAD]
    assert r["state"] == "failed", r
    states = {t: ti["state"] for t, ti in r["tis"].items()}
    assert states["wait_for_day"] == states["gate"] == "success" and states["train"] == "failed", states
    assert r["tis"]["train"]["try_number"] == 1
    assert all(states[t] == "upstream_failed" for t in ("register", "extract", "report")), states
    assert not (workdir / "checkpoints" / f"day={BAD}.pt").exists()
    # day 5: its run is created but nothing of it runs (the previous day did not finish)
    r = res[AFTER_BAD]
    assert r["blocked"] is not None and r["state"] == "running", r
    assert all(ti["state"] is None for ti in r["tis"].values()), r
    assert not [c for c in calls if len(c) > 2 and c[2] == AFTER_BAD], calls
