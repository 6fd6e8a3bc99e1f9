"""DAG `matta_daily`: the daily online training of recsys-matta, one run per day D (the run's
data interval is [D, D+1); the tasks get D as `{{ data_interval_start | ds }}`).

    wait_for_day -> gate -> train -> register -> extract -> report

* wait_for_day: `matta day-ready` until D's partition has landed (`_SUCCESS` marker or Parquet
  files with rows, pipelines/config.yaml `sensor.require`).
* gate: yesterday's candidate against the champion, both scored on D (held out for both).
* train: evaluate on D, train one pass, checkpoint (local Bash task, or torchrun in the GPU
  image: DockerOperator with GPU device requests or KubernetesPodOperator, `train.runner`).
* register: the new Student as `candidate` (tomorrow's gate judges it).
* extract: the Mix'n'Match report and the elastic sizes (`matta-student-elastic@wnw-k<K>`).
* report: `reports/day=D.json`, the metric plots, the summary.

Order and failures: @daily with catchup=True (a backfill runs every day since start_date, in
order), max_active_runs=1 (one day at a time), depends_on_past=True on every task (a task waits
for the same task of the previous day). The sensor also has wait_for_downstream=True and the
extra edge wait_for_day >> report, so nothing of day D+1 starts, not even its sensor, until
day D's report (its last task) has succeeded: a failed day blocks every later day.

Each stage is idempotent (recsys_matta/jobs/daily.py `run_stage`), so all are retried with
exponential backoff; matta's exit 2 (bad input, e.g. a day failing its checks) is not retried.

The DAG imports neither torch nor recsys_matta: every task runs the project's matta
(`matta.executable`). Settings: pipelines/config.yaml, or the file in $MATTA_PIPELINE_CONFIG.
"""

from __future__ import annotations

import sys
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

_PIPELINES = str(Path(__file__).resolve().parents[1])
if _PIPELINES not in sys.path:  # matta_pipeline lives beside the dags folder
    sys.path.insert(0, _PIPELINES)

from airflow.providers.standard.sensors.bash import BashSensor  # noqa: E402
from airflow.sdk import DAG  # noqa: E402
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable  # noqa: E402

from matta_pipeline import tasks  # noqa: E402
from matta_pipeline.config import load_config  # noqa: E402
from matta_pipeline.operators import MattaStageOperator, train_operator  # noqa: E402

cfg = load_config()


def _utc(d):
    return None if d is None else datetime.combine(d, time(), tzinfo=timezone.utc)


def _retry_args(stage: str) -> dict:
    r = cfg.retry
    return {
        "retries": r.retries.get(stage, 0),
        "retry_delay": timedelta(seconds=r.retry_delay_s),
        "retry_exponential_backoff": r.exponential_backoff,
        "max_retry_delay": timedelta(seconds=r.max_retry_delay_s),
    }


with DAG(
    dag_id=cfg.dag.dag_id,
    description="recsys-matta daily online training: wait for the day, gate, train, register, extract, report",
    # @daily as a data interval [D, D+1): the run for D starts when D has ended. (A bare "@daily"
    # is a CronTriggerTimetable in Airflow 3, whose logical date is the trigger time, D+1.)
    schedule=CronDataIntervalTimetable(cfg.dag.schedule, timezone="UTC"),
    start_date=_utc(cfg.dag.start_date),
    end_date=_utc(cfg.dag.end_date),
    catchup=True,
    max_active_runs=1,
    default_args={"depends_on_past": True, "owner": "recsys-matta"},
    tags=list(cfg.dag.tags),
    doc_md=__doc__,
) as dag:
    wait_for_day = BashSensor(
        task_id="wait_for_day",
        bash_command=tasks.sensor_command(cfg),
        retry_exit_code=1,  # 1: not landed yet, poke again; any other code fails (a bad spec, day)
        mode=cfg.sensor.mode,
        poke_interval=cfg.sensor.poke_interval_s,
        timeout=cfg.sensor.timeout_s,
        wait_for_downstream=True,
        **_retry_args("sensor"),
    )
    stages = {
        stage: (
            train_operator(cfg, **_retry_args(stage))
            if stage == "train"
            else MattaStageOperator(
                task_id=stage,
                bash_command=tasks.local_stage_command(cfg, stage),
                no_retry_exit_codes=tuple(cfg.retry.no_retry_exit_codes),
                **_retry_args(stage),
            )
        )
        for stage in ("gate", "train", "register", "extract", "report")
    }
    wait_for_day >> stages["gate"] >> stages["train"] >> stages["register"] >> stages["extract"] >> stages["report"]
    wait_for_day >> stages["report"]  # with wait_for_downstream: day D+1 waits for day D's report
