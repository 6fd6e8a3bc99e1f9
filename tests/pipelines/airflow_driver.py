"""Runs INSIDE the Airflow environment (pipelines/.venv/bin/python), never under the project's
pytest: the tests in this folder start it as a subprocess and read the JSON it prints last.

    airflow_driver.py integrity           the DAG's structure
    airflow_driver.py run DAY [DAY ...]   dag.test() for each day, in the given order

Environment: AIRFLOW_HOME (a migrated sqlite DB), AIRFLOW__CORE__DAGS_FOLDER=pipelines/dags,
MATTA_PIPELINE_CONFIG (the test's config).

`dag.test()` creates MANUAL runs, and with catchup=True depends_on_past looks only at earlier
SCHEDULED runs, so the test runs would not depend on each other. `run` therefore makes
`dag.test()` create the run as the scheduler does (run type SCHEDULED, the day's data interval)
and keeps its loop. A run the scheduler would leave waiting (nothing schedulable because the
previous day failed) is reported as blocked instead of spinning in dag.test()'s wait loop.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    return bag, bag.dags.get("matta_daily")


def integrity() -> dict:
    from airflow.utils.dag_cycle_tester import check_cycle

    bag, dag = _dag()
    out: dict = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dags)}
    if dag is None:
        return out
    check_cycle(dag)  # raises on a cycle
    tt = dag.timetable
    out.update(
        timetable=type(tt).__name__,
        schedule=getattr(tt, "_expression", None),
        catchup=dag.catchup,
        max_active_runs=dag.max_active_runs,
        start_date=dag.start_date.isoformat() if dag.start_date else None,
        topological=[t.task_id for t in dag.topological_sort()],
        modules=sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchrec", "recsys_matta", "mlflow")),
        tasks={
            t.task_id: {
                "type": type(t).__name__,
                "depends_on_past": t.depends_on_past,
                "wait_for_downstream": t.wait_for_downstream,
                "retries": t.retries,
                "retry_exponential_backoff": bool(t.retry_exponential_backoff),
                "upstream": sorted(t.upstream_task_ids),
                "downstream": sorted(t.downstream_task_ids),
                "command": getattr(t, "bash_command", None),
            }
            for t in dag.tasks
        },
    )
    return out


class Blocked(Exception):
    pass


def _scheduled_runs():
    """Patch dag.test()'s run creation: a SCHEDULED run with the day's data interval."""
    import airflow.models.dagrun as dagrun_mod
    from airflow.models.dagrun import DagRun
    from airflow.ti_deps.dep_context import DepContext
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from sqlalchemy import select

    def create(*, dag, run_id, logical_date, data_interval, run_after, conf, triggered_by, triggering_user_name, start_date, session):
        old = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.logical_date == logical_date))
        if old:
            session.delete(old)
            session.commit()
        interval = dag.timetable.infer_manual_data_interval(run_after=logical_date + timedelta(days=1))
        dr = dag.create_dagrun(
            run_id=DagRun.generate_run_id(run_type=DagRunType.SCHEDULED, logical_date=logical_date, run_after=run_after),
            logical_date=logical_date, data_interval=interval, run_after=run_after, conf=conf,
            run_type=DagRunType.SCHEDULED, state=DagRunState.RUNNING, triggered_by=triggered_by,
            triggering_user_name=triggering_user_name, start_date=start_date, session=session,
        )  # fmt: skip
        schedulable, _ = dr.update_state(session=session)
        if not schedulable and dr.state == DagRunState.RUNNING:
            reasons = {}
            for ti in dr.get_task_instances(session=session):
                try:
                    ti.task = dag.get_task(ti.task_id)  # a TI read from the DB has no task attached
                    reasons[ti.task_id] = [
                        d.reason for d in ti.get_failed_dep_statuses(dep_context=DepContext(), session=session)
                    ]
                except Exception as e:  # the reasons are for the message only
                    reasons[ti.task_id] = [f"(reasons unavailable: {type(e).__name__}: {e})"]
            raise Blocked(json.dumps({"run_id": dr.run_id, "reasons": reasons}))
        return dr

    dagrun_mod.get_or_create_dagrun = create


def _state(day: str) -> dict:
    from airflow import settings
    from airflow.models.dagrun import DagRun

    session = settings.Session()
    session.expire_all()
    dr = next(r for r in DagRun.find(dag_id="matta_daily", session=session) if r.logical_date.date().isoformat() == day)
    return {
        "run_id": dr.run_id,
        "run_type": str(dr.run_type),
        "state": str(dr.state),
        "data_interval_start": dr.data_interval_start.isoformat(),
        "tis": {
            ti.task_id: {
                "state": None if ti.state is None else str(ti.state),
                "try_number": ti.try_number,
                "start": ti.start_date.isoformat() if ti.start_date else None,
                "end": ti.end_date.isoformat() if ti.end_date else None,
            }
            for ti in dr.get_task_instances(session=session)
        },
    }


def run(days: list[str]) -> dict:
    _scheduled_runs()
    _, dag = _dag()
    out = {}
    for day in days:
        logical = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
        try:
            dag.test(logical_date=logical, run_after=logical + timedelta(days=1))
        except Blocked as e:
            out[day] = {"blocked": json.loads(str(e)), **_state(day)}
            continue
        out[day] = {"blocked": None, **_state(day)}
    return out


def main() -> None:
    cmd, *args = sys.argv[1:]
    result = integrity() if cmd == "integrity" else run(args)
    print("\nDRIVER-RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
