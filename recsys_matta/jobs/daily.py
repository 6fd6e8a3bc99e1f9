"""The daily job a scheduler runs on a GPU node (docs/architecture.md sections 2 and 9), for day D:

    take yesterday's state
    -> delayed champion gate: yesterday's candidate and the champion, both scored on D's raw rows
       (a day neither has seen), `champion` moves to the candidate only when strictly better
    -> evaluate on D (progressive) -> train on D -> log to MLflow
    -> register the Student (alias `candidate`; the very first version also becomes `champion`)
    -> (after the last day) the Mix'n'Match report

The gate runs before the training of D because only then is there data that is held out for
BOTH models: the candidate was trained through D-1, the champion earlier. (Gating the new
candidate on D itself would compare it on the data it just trained on; gating it on its own
progressive metric compares the champion with itself when they are the same weights.) So a
candidate registered today is judged by tomorrow's run, on tomorrow's data.

`run_daily` takes one day or a range (backfill: the same steps for each day in order, in one
MLflow run whose metric steps are the day indices). A failed day raises before anything of it is
registered; the MLflow run ends FAILED and the CLI exits non-zero.

A tracking server that cannot be reached fails the job within the run config's `tracking`
bounds with one line naming its URI (`ServiceError`, exit 1); the run is marked FAILED (at once,
or by the next job when the server was down). A day trained and checkpointed whose candidate
could not be registered is remembered in `<workdir>/pending_registration.json`; the next run
registers it first (or completes a half-done registration), before gating it on its new day.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from recsys_matta.distributed.context import DistContext
from recsys_matta.errors import ServiceError, UserError
from recsys_matta.jobs.lock import workdir_lock
from recsys_matta.jobs.mixnmatch import mixnmatch_report
from recsys_matta.jobs.registering import elastic_model_name, gate_candidate, register_candidate, register_elastic
from recsys_matta.jobs.train import ConsoleSink, prepare, summary_table
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.config import RunConfig
from recsys_matta.train.checkpoint import atomic_write_text
from recsys_matta.train.records import DayRecord
from recsys_matta.online.trainer import MetricsSink, OnlineTrainer

log = logging.getLogger(__name__)


class TrackerSink(MetricsSink):
    """Per-day records -> MLflow metrics (`student/auc_loss`, `loss/total`, ...; step = day index)."""

    def __init__(self, tracker):
        self.tracker = tracker

    def log_day(self, record: DayRecord, step: int) -> None:
        from recsys_matta.tracking.params import day_metrics

        self.tracker.log_metrics(day_metrics(record), step=step)


@dataclass
class DailyOutcome:
    days: list[str] = field(default_factory=list)
    decisions: list = field(default_factory=list)
    report: dict | None = None
    run_id: str | None = None
    tracking_uri: str | None = None
    elastic: dict = field(default_factory=dict)


def _log_run_artifacts(trainer: OnlineTrainer, tracker, workdir: Path) -> None:
    from recsys_matta.tracking.plots import plot_auc_loss_per_day, plot_rel_improvement_per_day

    plots = workdir / "plots"
    tracker.log_artifact(workdir / "metrics.jsonl")
    tracker.log_artifact(plot_auc_loss_per_day(trainer.history, plots / "auc_loss_per_day.png"), "plots")
    tracker.log_artifact(plot_rel_improvement_per_day(trainer.history, plots / "rel_improvement_per_day.png"), "plots")


STAGES = ("gate", "train", "register", "extract", "report")


@dataclass
class DailySession:
    """What the stages of one `matta daily` invocation share: the spec and config, the trainer
    (restored from the workdir), the open tracker and the outcome so far. `run_daily` runs the
    stages in sequence on one session; `run_stage` (the pipeline's tasks) runs one."""

    spec: FeatureSpec
    cfg: RunConfig
    spec_path: Path
    data: Path
    workdir: Path
    ctx: DistContext
    trainer: OnlineTrainer
    console: Console | None = None
    out: DailyOutcome = field(default_factory=DailyOutcome)
    tracker: object = None

    def say(self, msg: str) -> None:
        if self.console is not None and self.ctx.is_main:
            self.console.print(msg)


def start_tracking(s: DailySession, tracker, log_inputs: bool = True) -> None:
    """Attach the run: its inputs (config, spec) and the per-day metrics sink."""
    s.tracker = tracker
    s.out.run_id = tracker.run_id
    s.out.tracking_uri = getattr(tracker, "tracking_uri", None)
    if log_inputs:
        tracker.log_params({"config": s.cfg.model_dump(mode="json"), "spec": s.spec.model_dump(mode="json")})
        tracker.log_artifact(s.spec_path, "inputs")
        tracker.log_dict(s.cfg.model_dump(mode="json"), "inputs/run_config.json")
    sinks: tuple[MetricsSink, ...] = (TrackerSink(tracker),)
    s.trainer.sinks = (*sinks, ConsoleSink(s.console)) if s.console is not None and s.ctx.is_main else sinks


def gate_stage(s: DailySession, day: str):
    """Yesterday's candidate against the champion on `day` (rank 0; the others wait). The day
    must have passed `trainer.preflight` first."""
    decision = None
    if s.cfg.daily.register_student and s.ctx.is_main:
        decision = gate_candidate(s.spec, s.cfg, s.data, day, s.tracker, len(s.trainer.done_days), s.console)
        if decision is not None:
            s.out.decisions.append(decision)
    s.ctx.barrier()
    return decision


def train_stage(s: DailySession, day: str) -> DayRecord | None:
    """Evaluate on `day`, train one pass, checkpoint (None: the day was finished already)."""
    if s.cfg.daily.register_student and s.ctx.is_main:
        _mark_pending(s.workdir, day)  # until its candidate is registered (the job may die first)
    records = s.trainer.run([day])
    return records[0] if records else None


def register_stage(s: DailySession, record: DayRecord | None) -> int | None:
    """Register the trained Student as the new `candidate` (a collective export first)."""
    if not s.cfg.daily.register_student or record is None:
        return None
    models = s.trainer.export()  # a collective when the tables are sharded
    version = None
    if s.ctx.is_main:
        version, first = register_candidate(s.trainer, record, s.data, s.tracker, s.console, models[0])
        _clear_pending(s.workdir)
        if first is not None:
            s.out.decisions.append(first)
    s.ctx.barrier()
    return version


def extract_stage(s: DailySession, register_ks=(), trained_through: str | None = None) -> dict | None:
    """The Mix'n'Match report of the trained model (see `_mixnmatch`) and, for each K in
    `register_ks`, the wide-narrow-wide Student registered as `<model>-elastic@wnw-k<K>`."""
    if not (s.trainer.history and s.cfg.daily.mixnmatch):
        return None
    models = s.trainer.export()  # a collective when the tables are sharded
    if s.ctx.is_main:
        s.out.report = _mixnmatch(s.trainer, models, s.spec, s.cfg, s.data, s.workdir, s.tracker)
        if s.out.report is not None:
            s.out.report["trained_through"] = s.trainer.done_days[-1]
            atomic_write_text(s.workdir / "mixnmatch" / "report.json", json.dumps(s.out.report, indent=2, default=str))
            if register_ks:
                s.out.elastic = register_elastic(
                    s.tracker, models[0], s.spec, s.data, s.out.report["days"], s.out.report, list(register_ks),
                    s.cfg.registered_model, s.console, trained_through=trained_through,
                )  # fmt: skip
    s.ctx.barrier()
    return s.out.report


def report_stage(s: DailySession) -> None:
    """The run's artifacts (metrics.jsonl, per-day plots) and the summary table (rank 0)."""
    if not (s.ctx.is_main and s.trainer.history):
        return
    _log_run_artifacts(s.trainer, s.tracker, s.workdir)
    if s.console is not None:
        s.console.print(summary_table(s.trainer.history))
        if s.out.report is not None:
            s.console.print(f"Mix'n'Match report: {s.workdir / 'mixnmatch' / 'report.md'}")


@contextmanager
def daily_job(
    spec_path: Path,
    data: Path,
    workdir: Path,
    config_path: Path | None,
    overrides,
    force: bool,
    console: Console | None,
    tracking_uri: str | None,
) -> Iterator[DailySession]:
    """The session of one `matta daily` invocation (the whole job or one stage), under the work
    directory's lock (`WorkdirLocked` when another job holds it) and the run config's tracking
    bounds: an unreachable tracking server ends the job with one `ServiceError` naming its URI."""
    from recsys_matta.tracking.tracker import is_remote, resolve_tracking_uri, set_http_limits, short_error

    spec, cfg = prepare(spec_path, config_path, list(overrides))
    ctx = DistContext.from_env(cfg.train.device)
    workdir = Path(workdir)
    set_http_limits(cfg.tracking.http_retries, cfg.tracking.http_timeout_s)
    uri = resolve_tracking_uri(workdir, tracking_uri)
    with workdir_lock(workdir, ctx):
        try:
            trainer = OnlineTrainer(spec, cfg, data, workdir, ctx=ctx, force=force)
            yield DailySession(spec, cfg, Path(spec_path), Path(data), workdir, ctx, trainer, console)
        except Exception as e:
            if not (is_remote(uri) and _is_tracking_failure(e)):
                raise
            raise ServiceError(
                f"MLflow tracking server {uri}: {short_error(e)} (after {cfg.tracking.http_retries} "
                f"retries, tracking.http_timeout_s={cfg.tracking.http_timeout_s}). Finished days "
                f"keep their checkpoints in {workdir}; a candidate not registered yet is registered "
                f"by the next run."
            ) from None


def run_daily(
    spec_path: Path,
    data: Path,
    workdir: Path,
    days_expr: str,
    config_path: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    force: bool = False,
    console: Console | None = None,
    tracking_uri: str | None = None,
) -> DailyOutcome:
    """Run the daily job for `days_expr` (one day, `A..B` or a comma list). See module docstring.
    Holds the work directory's lock throughout (`WorkdirLocked` when another job has it)."""
    from recsys_matta.tracking.tracker import open_tracker

    with daily_job(spec_path, data, workdir, config_path, overrides, force, console, tracking_uri) as s:
        trainer, ctx, cfg = s.trainer, s.ctx, s.cfg
        days = _restore(s, days_expr)
        name = f"daily {days[0]}" + (f"..{days[-1]}" if len(days) > 1 else "")
        tracker = open_tracker(s.workdir, cfg.experiment, name, tracking_uri, enabled=ctx.is_main, tags={"days": ",".join(days)})
        with tracker:
            start_tracking(s, tracker)
            if cfg.daily.register_student:
                first = _catch_up(trainer, s.data, s.workdir, tracker, s.console, ctx)
                if first is not None:
                    s.out.decisions.append(first)
            for day in days:
                if day in trainer.done_days and not force:
                    s.say(f"{day}: already finished in {s.workdir}; nothing to do (use --force to redo)")
                    continue
                trainer.preflight(day)  # a bad day fails before the gate scores anything on it
                gate_stage(s, day)
                register_stage(s, train_stage(s, day))
            extract_stage(s)
            report_stage(s)
        return s.out


def _restore(s: DailySession, days_expr: str) -> list[str]:
    """The days of `days_expr` (a missing day is a DataError, before any run), the trainer
    restored from the newest readable checkpoint (finished days, state), the workdir made."""
    days = s.trainer.reader.select_days(days_expr)
    s.trainer.restore()
    s.out.days = days
    if s.ctx.is_main:
        s.workdir.mkdir(parents=True, exist_ok=True)
    return days


def _is_tracking_failure(e: BaseException) -> bool:
    """An MLflow client or HTTP error (not a bug of ours, not bad data)."""
    import requests
    from mlflow.exceptions import MlflowException

    return isinstance(e, (MlflowException, requests.exceptions.RequestException, ConnectionError))


PENDING_FILE = "pending_registration.json"


def _mark_pending(workdir: Path, day: str) -> None:
    atomic_write_text(workdir / PENDING_FILE, json.dumps({"day": day}))


def _pending(workdir: Path) -> str | None:
    try:
        return json.loads((workdir / PENDING_FILE).read_text())["day"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _clear_pending(workdir: Path) -> None:
    (workdir / PENDING_FILE).unlink(missing_ok=True)


def _catch_up(trainer: OnlineTrainer, data: Path, workdir: Path, tracker, console: Console | None, ctx: DistContext):
    """Register the candidate an earlier run trained but could not register (the server was
    down): the newest checkpoint's Student, when it is that day's; a half-done registration (a
    version without its alias) is completed instead. Returns the first-champion decision or None.
    Collective (the export) when the tables are sharded."""
    from recsys_matta.tracking.registry import _client, complete_registration

    name = trainer.cfg.registered_model
    todo, existing = None, None
    if ctx.is_main:
        day = _pending(workdir)
        if day is not None and day not in trainer.done_days:  # its training did not finish
            _clear_pending(workdir)
            day = None
        if day is not None and trainer.done_days[-1] != day:
            log.warning(
                "the candidate of %s was never registered and its state is gone (the newest checkpoint "
                "is %s); it is skipped", day, trainer.done_days[-1],
            )  # fmt: skip
            _clear_pending(workdir)
            day = None
        if day is not None:
            found = [
                int(mv.version)
                for mv in _client().search_model_versions(f"name='{name}'")
                if mv.tags.get("day") == day
            ]
            existing, todo = (max(found) if found else None), day
    todo, existing = ctx.all_gather_object((todo, existing))[0]
    if todo is None:
        return None
    record = next(r for r in trainer.history if r.day == todo)
    models = trainer.export()  # collective with sharded tables
    first = None
    if ctx.is_main:
        if existing is None:
            _, first = register_candidate(trainer, record, data, tracker, console, models[0], catch_up=True)
        else:  # registered, but the job stopped before its alias
            first = complete_registration(name, existing, record.student.auc_loss, day=todo, tracker=tracker)
            if console is not None:
                console.print(f"{name} v{existing} (trained through {todo}) is the candidate (its registration is completed)")
        _clear_pending(workdir)
    return first


# ---- one stage of one day: the tasks of the scheduled pipeline (pipelines/dags/matta_daily.py) ---
def run_stage(
    stage: str,
    spec_path: Path,
    data: Path,
    workdir: Path,
    day: str,
    config_path: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    force: bool = False,
    console: Console | None = None,
    tracking_uri: str | None = None,
    register_ks: tuple[int, ...] | list[int] = (),
) -> DailyOutcome:
    """Run ONE stage of the daily job for `day`, in its own process, as a scheduler's task does
    (`matta daily --stage STAGE --day D`). Each stage restores the workdir, writes to the day's
    one MLflow run (tag `matta.day`; reopened by every stage and retry) and is idempotent:

    * gate: the day's checks, then the delayed gate. A day that fails its checks is not gated
      (nothing scores a bad day); the stage says so and succeeds, and the train stage fails on
      the same check. A day already trained, or a candidate already judged, is not gated again.
    * train: evaluate, train, checkpoint; a day already finished is a no-op (a retry after the
      process was killed behind its checkpoint trains nothing twice), except that the day's
      metrics are logged to its MLflow run when the kill came before that.
    * register: the day's Student as `candidate`, unless a version trained through the day with
      the same AucLoss is registered already (then only missing aliases are set).
    * extract: the Mix'n'Match report and the elastic sizes `register_ks`, unless the report and
      those aliases are of the model trained through the day already.
    * report: the run's artifacts, the summary table and `reports/day=D.json`.
    """
    from recsys_matta.tracking.tracker import open_day_tracker

    if stage not in STAGES:
        raise UserError(f"--stage {stage!r}: use one of {', '.join(STAGES)}")
    with daily_job(spec_path, data, workdir, config_path, overrides, force, console, tracking_uri) as s:
        trainer, ctx = s.trainer, s.ctx
        (day,) = _restore(s, day)
        done = day in trainer.done_days and not force
        tracker = open_day_tracker(
            s.workdir, s.cfg.experiment, f"daily {day}", {"matta.day": day}, tracking_uri,
            enabled=ctx.is_main, tags={"days": day},
        )  # fmt: skip
        with tracker:
            start_tracking(s, tracker, log_inputs=not getattr(tracker, "resumed", False))
            tracker.set_tags({f"matta.stage.{stage}": "started"})
            if stage == "gate":
                if done:
                    s.say(f"gate on {day}: {day} is trained already in {s.workdir}; it was gated before that")
                else:
                    try:
                        trainer.preflight(day)
                    except UserError as e:
                        s.say(f"gate on {day}: not judged, the day fails its checks; the train stage fails on it: {e}")
                    else:
                        gate_stage(s, day)
            elif stage == "train":
                if done:
                    s.say(f"{day}: already finished in {s.workdir}; nothing to train (use --force to redo)")
                    _ensure_day_metrics(s, day)
                else:
                    train_stage(s, day)
            elif stage == "register":
                _register_once(s, _trained_through(s, day))
            elif stage == "extract":
                _extract_once(s, _trained_through(s, day), list(register_ks))
            else:
                if (s.workdir / "mixnmatch" / "report.json").is_file():
                    s.out.report = json.loads((s.workdir / "mixnmatch" / "report.json").read_text())
                report_stage(s)
                if ctx.is_main:
                    _day_report(s, day)
            tracker.set_tags({f"matta.stage.{stage}": "done"})
        return s.out


def _trained_through(s: DailySession, day: str) -> DayRecord:
    """The record of `day`, which must be the newest finished day (what register/extract use)."""
    done = s.trainer.done_days
    if day not in done:
        raise UserError(f"day {day} is not trained in {s.workdir} yet (run the train stage first)")
    if done[-1] != day:
        raise UserError(f"the newest checkpoint in {s.workdir} is of {done[-1]}, not {day}: this stage of {day} is stale")
    return next(r for r in s.trainer.history if r.day == day)


def _ensure_day_metrics(s: DailySession, day: str) -> None:
    """A train stage killed between the checkpoint and what follows it (metrics.jsonl, the
    metric logging): write them from the checkpoint's history, once."""
    from recsys_matta.train.records import METRICS_FILE, read_records, write_records

    if not s.ctx.is_main:
        return
    path = s.workdir / METRICS_FILE
    if not path.is_file() or day not in {r.day for r in read_records(path)}:
        write_records(path, s.trainer.history)
        s.say(f"{day}: {path} was behind the checkpoint; rewritten from it")
    client = getattr(s.tracker, "client", None)
    if client is None:
        return
    if "student/auc_loss" not in client.get_run(s.tracker.run_id).data.metrics:
        record = next(r for r in s.trainer.history if r.day == day)
        TrackerSink(s.tracker).log_day(record, step=record.day_index)
        s.say(f"{day}: its metrics were missing from MLflow run {s.tracker.run_id}; logged them from the checkpoint")


def _register_once(s: DailySession, record: DayRecord) -> int | None:
    from recsys_matta.tracking.registry import _client, complete_registration, version_tags

    if not s.cfg.daily.register_student:
        s.say("daily.register_student=false: nothing to register")
        return None
    name = s.cfg.registered_model
    baseline = record.baseline.auc_loss if record.baseline else None
    want = version_tags(record.day, record.student.auc_loss, baseline)
    found = [
        int(v.version) for v in _client().search_model_versions(f"name='{name}'")
        if all(v.tags.get(k) == x for k, x in want.items())
    ]  # fmt: skip
    if not found:
        return register_stage(s, record)
    version = max(found)
    decision = complete_registration(name, version, record.student.auc_loss, day=record.day, tracker=s.tracker)
    if decision is not None:
        s.out.decisions.append(decision)
    _clear_pending(s.workdir)
    s.say(f"{name} v{version} (trained through {record.day}) is registered already; nothing to do")
    return version


def _extract_once(s: DailySession, record: DayRecord, register_ks: list[int]) -> dict | None:
    from recsys_matta.tracking.registry import alias_version, version_info

    path = s.workdir / "mixnmatch" / "report.json"
    if path.is_file():
        old = json.loads(path.read_text())
        name = elastic_model_name(s.cfg.registered_model)
        done = old.get("trained_through") == record.day and all(
            (v := alias_version(name, f"wnw-k{k}")) is not None
            and version_info(name, v)["tags"].get("trained_through") == record.day
            for k in register_ks
        )
        if done:
            s.say(f"Mix'n'Match of the model trained through {record.day} is done already: {path}")
            s.out.report = old
            return old
    return extract_stage(s, register_ks, trained_through=record.day)


def _day_report(s: DailySession, day: str) -> dict:
    """`reports/day=D.json`: the day's metrics, the gate judged on it, the registry's aliases."""
    from recsys_matta.tracking.registry import CANDIDATE, _client, alias_version, champion_version

    record = next((r for r in s.trainer.history if r.day == day), None)
    name = s.cfg.registered_model
    gated = [
        {"version": int(v.version), **{k[len("gate."):]: x for k, x in v.tags.items() if k.startswith("gate.")}}
        for v in _client().search_model_versions(f"name='{name}'")
        if v.tags.get("gate.day") == day
    ]  # fmt: skip
    elastic = {}
    for k in sorted({r["k"] for r in (s.out.report or {}).get("models", []) if r.get("k") is not None}):
        if (v := alias_version(elastic_model_name(name), f"wnw-k{k}")) is not None:
            elastic[f"wnw-k{k}"] = v
    rep = {
        "day": day,
        "trained": record is not None,
        "student_auc_loss": record.student.auc_loss if record else None,
        "baseline_auc_loss": record.baseline.auc_loss if record and record.baseline else None,
        "rows": record.reader if record else None,
        "gate": gated[0] if gated else None,
        "candidate": alias_version(name, CANDIDATE),
        "champion": champion_version(name),
        "elastic": elastic,
        "mlflow_run_id": s.out.run_id,
    }
    path = s.workdir / "reports" / f"day={day}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rep, indent=2, default=str))
    s.tracker.log_artifact(path, "reports")
    s.say(
        f"{day} | student AucLoss {rep['student_auc_loss']} | champion v{rep['champion']}, candidate "
        f"v{rep['candidate']}" + (f" | gate: {gated[0].get('reason', '')}" if gated else " | gate: none") + f" | {path}"
    )
    return rep


def _mixnmatch(trainer: OnlineTrainer, models, spec: FeatureSpec, cfg: RunConfig, data: Path, workdir: Path, tracker) -> dict | None:
    """The report on the day after the last trained day (held out), else on that day itself."""
    if cfg.single_tower:
        return None
    days = trainer.reader.days()
    last = trainer.done_days[-1]
    later = days[days.index(last) + 1 :]
    holdout = [later[0]] if later else [last]
    if not later:
        log.warning("Mix'n'Match scored on %s, which the model trained on (no later day yet)", last)
    model, baseline = models
    report = mixnmatch_report(
        model, baseline, spec, data, holdout, trainer.eval_label, workdir / "mixnmatch",
        all_max=cfg.daily.mixnmatch_all_max, batch_size=cfg.train.eval_batch_size,
    )  # fmt: skip
    report["held_out"] = bool(later)
    for f in ("report.json", "report.md", "frontier.png"):
        tracker.log_artifact(workdir / "mixnmatch" / f, "mixnmatch")
    return report
