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

import logging
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from recsys_matta.data.partitions import parse_day
from recsys_matta.distributed.context import DistContext
from recsys_matta.errors import ServiceError, UserError
from recsys_matta.jobs.lock import workdir_lock
from recsys_matta.jobs.mixnmatch import mixnmatch_report
from recsys_matta.jobs.scoring import raw_frames, score_pyfunc
from recsys_matta.jobs.train import ConsoleSink, prepare, summary_table
from recsys_matta.models.extract import extract, student_choice
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.config import RunConfig
from recsys_matta.train.records import DayRecord
from recsys_matta.train.trainer import MetricsSink, OnlineTrainer

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


def gate_candidate(
    spec: FeatureSpec, cfg: RunConfig, data: Path, day: str, tracker, step: int, console: Console | None = None
):
    """The delayed gate before training `day`: the `candidate` version (trained through an
    earlier day, not gated yet) against the `champion`, both loaded from the registry and scored
    on the raw rows of `day`. Returns the `GateDecision`, or None when there is nothing to gate
    (no candidate, the candidate is the champion, already gated, or it has seen `day`)."""
    from recsys_matta.tracking.registry import (
        CANDIDATE,
        alias_version,
        champion_version,
        gate,
        load_champion,
        load_version,
        version_info,
    )

    name = cfg.registered_model
    label = cfg.eval_label
    cand, champ = alias_version(name, CANDIDATE), champion_version(name)

    def skip(why: str) -> None:
        if console is not None:
            console.print(f"[bold]gate[/bold] {name} on {day}: nothing to judge ({why})")

    if cand is None:
        return skip("no candidate registered yet")
    if cand == champ:
        return skip(f"the candidate v{cand} is the champion already")
    tags = version_info(name, cand)["tags"]
    if "gate.day" in tags:
        return skip(f"the candidate v{cand} was judged on {tags['gate.day']} already")
    trained = tags.get("day")
    if trained is None or parse_day(trained, spec) >= parse_day(day, spec):
        log.warning("gate: %s v%d was trained through %s; it cannot be judged on %s", name, cand, trained, day)
        return None
    cand_auc = score_pyfunc(load_version(name, cand), spec, data, day, label).auc_loss
    champ_auc = None if champ is None else score_pyfunc(load_champion(name), spec, data, day, label).auc_loss
    decision = gate(name, cand, cand_auc, champ_auc, day=day, tracker=tracker)
    tracker.log_metrics(
        {"gate/candidate_auc_loss": cand_auc, "gate/champion_auc_loss": champ_auc, "gate/moved": float(decision.moved)},
        step=step,
    )
    if console is not None:
        champ_s = "none" if champ_auc is None else f"{champ_auc:.5f} (v{champ})"
        console.print(
            f"[bold]gate[/bold] {name} v{cand} (trained through {trained}) on {day}: candidate AucLoss "
            f"{cand_auc:.5f} vs champion {champ_s} -> "
            + ("[green]champion moved[/green]" if decision.moved else "[yellow]champion stays[/yellow]")
            + f" ({decision.reason})"
        )
    return decision


def register_candidate(
    trainer: OnlineTrainer, record: DayRecord, data: Path, tracker, console: Console | None = None, model=None,
    catch_up: bool = False,
):
    """Log the current Student as a pyfunc and register it (alias `candidate`, tagged with the
    day it was trained through). When the model has no champion yet it becomes the champion
    (nothing to compare with); otherwise tomorrow's gate judges it. Returns the new version and
    the first-champion `GateDecision` (or None)."""
    from recsys_matta.serving.pyfunc import log_student
    from recsys_matta.tracking.registry import champion_version, gate, register, version_tags

    spec, cfg = trainer.spec, trainer.cfg
    if cfg.ta_alone:
        raise UserError("ta_alone=true trains a study reference, not a servable Student: set daily.register_student=false")
    day, name = record.day, cfg.registered_model
    if model is None:
        model, _ = trainer.export()
    student = extract(model, student_choice(model.cfg))
    example = next(raw_frames(spec, data, day, limit=5), None)
    if example is None:
        raise UserError(f"day {day} under {data} has no rows to take an input example from")
    uri = log_student(tracker, student, spec, example, name="student", step=record.day_index, metadata={"day": day})
    baseline_auc = record.baseline.auc_loss if record.baseline else None
    version = register(uri, name, tags=version_tags(day, record.student.auc_loss, baseline_auc))
    first = None
    if champion_version(name) is None:
        first = gate(name, version, record.student.auc_loss, None, day=day, tracker=tracker)
    if console is not None:
        console.print(
            f"registered {name} v{version} (trained through {day}) as candidate"
            + (" (catch-up: the run that trained it could not register it)" if catch_up else "")
            + ("; no champion yet, so it is the champion" if first is not None else "; the next day's run gates it")
        )
    return version, first


def _log_run_artifacts(trainer: OnlineTrainer, tracker, workdir: Path) -> None:
    from recsys_matta.tracking.plots import plot_auc_loss_per_day, plot_rel_improvement_per_day

    plots = workdir / "plots"
    tracker.log_artifact(workdir / "metrics.jsonl")
    tracker.log_artifact(plot_auc_loss_per_day(trainer.history, plots / "auc_loss_per_day.png"), "plots")
    tracker.log_artifact(plot_rel_improvement_per_day(trainer.history, plots / "rel_improvement_per_day.png"), "plots")


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
    from recsys_matta.tracking.tracker import is_remote, resolve_tracking_uri, set_http_limits, short_error

    spec, cfg = prepare(spec_path, config_path, list(overrides))
    ctx = DistContext.from_env(cfg.train.device)
    workdir = Path(workdir)
    set_http_limits(cfg.tracking.http_retries, cfg.tracking.http_timeout_s)
    uri = resolve_tracking_uri(workdir, tracking_uri)
    with workdir_lock(workdir, ctx):
        try:
            return _run_daily(spec_path, spec, cfg, ctx, data, workdir, days_expr, force, console, tracking_uri)
        except Exception as e:
            if not (is_remote(uri) and _is_tracking_failure(e)):
                raise
            raise ServiceError(
                f"MLflow tracking server {uri}: {short_error(e)} (after {cfg.tracking.http_retries} "
                f"retries, tracking.http_timeout_s={cfg.tracking.http_timeout_s}). Finished days "
                f"keep their checkpoints in {workdir}; a candidate not registered yet is registered "
                f"by the next run."
            ) from None


def _is_tracking_failure(e: BaseException) -> bool:
    """An MLflow client or HTTP error (not a bug of ours, not bad data)."""
    import requests
    from mlflow.exceptions import MlflowException

    return isinstance(e, (MlflowException, requests.exceptions.RequestException, ConnectionError))


PENDING_FILE = "pending_registration.json"


def _mark_pending(workdir: Path, day: str) -> None:
    import json

    from recsys_matta.train.checkpoint import atomic_write_text

    atomic_write_text(workdir / PENDING_FILE, json.dumps({"day": day}))


def _pending(workdir: Path) -> str | None:
    import json

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
    from recsys_matta.tracking.registry import CANDIDATE, _client, alias_version, champion_version, gate

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
            if alias_version(name, CANDIDATE) != existing:
                _client().set_registered_model_alias(name, CANDIDATE, str(existing))
            if champion_version(name) is None:
                first = gate(name, existing, record.student.auc_loss, None, day=todo, tracker=tracker)
            if console is not None:
                console.print(f"{name} v{existing} (trained through {todo}) is the candidate (its registration is completed)")
        _clear_pending(workdir)
    return first


def _run_daily(spec_path, spec, cfg, ctx, data, workdir, days_expr, force, console, tracking_uri) -> DailyOutcome:
    from recsys_matta.tracking.tracker import open_tracker

    trainer = OnlineTrainer(spec, cfg, data, workdir, ctx=ctx, force=force)
    days = trainer.reader.select_days(days_expr)  # a missing day is a DataError, before any run
    trainer.restore()  # the newest readable checkpoint (finished days, state)
    out = DailyOutcome(days=days)
    if ctx.is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    name = f"daily {days[0]}" + (f"..{days[-1]}" if len(days) > 1 else "")
    tracker = open_tracker(workdir, cfg.experiment, name, tracking_uri, enabled=ctx.is_main, tags={"days": ",".join(days)})
    with tracker:
        out.run_id = tracker.run_id
        out.tracking_uri = getattr(tracker, "tracking_uri", None)
        tracker.log_params({"config": cfg.model_dump(mode="json"), "spec": spec.model_dump(mode="json")})
        tracker.log_artifact(spec_path, "inputs")
        tracker.log_dict(cfg.model_dump(mode="json"), "inputs/run_config.json")
        sinks: tuple[MetricsSink, ...] = (TrackerSink(tracker),)
        trainer.sinks = (*sinks, ConsoleSink(console)) if console is not None and ctx.is_main else sinks
        if cfg.daily.register_student:
            first = _catch_up(trainer, Path(data), workdir, tracker, console, ctx)
            if first is not None:
                out.decisions.append(first)
        for day in days:
            if day in trainer.done_days and not force:
                if console is not None and ctx.is_main:
                    console.print(f"{day}: already finished in {workdir}; nothing to do (use --force to redo)")
                continue
            trainer.preflight(day)  # a bad day fails before the gate scores anything on it
            if cfg.daily.register_student and ctx.is_main:
                decision = gate_candidate(spec, cfg, Path(data), day, tracker, len(trainer.done_days), console)
                if decision is not None:
                    out.decisions.append(decision)
            ctx.barrier()
            if cfg.daily.register_student and ctx.is_main:
                _mark_pending(workdir, day)  # until its candidate is registered (the run may die first)
            records = trainer.run([day])
            if cfg.daily.register_student and records:
                models = trainer.export()  # a collective when the tables are sharded
                if ctx.is_main:
                    _, first = register_candidate(trainer, records[0], data, tracker, console, models[0])
                    _clear_pending(workdir)
                    if first is not None:
                        out.decisions.append(first)
            ctx.barrier()
        models = trainer.export() if trainer.history and cfg.daily.mixnmatch else None
        if ctx.is_main and trainer.history:
            _log_run_artifacts(trainer, tracker, workdir)
            if models is not None:
                out.report = _mixnmatch(trainer, models, spec, cfg, data, workdir, tracker)
            if console is not None:
                console.print(summary_table(trainer.history))
                if out.report is not None:
                    console.print(f"Mix'n'Match report: {workdir / 'mixnmatch' / 'report.md'}")
    return out


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
