"""The daily job a scheduler runs on a GPU node (DESIGN.md section 7, issue 6):

    take yesterday's state -> evaluate on day D -> train on D -> log to MLflow
    -> register the Student (alias `candidate`) -> gate `champion` on held-out data
    -> (after the last day) the Mix'n'Match report

`run_daily` takes one day or a range (backfill: the same steps for each day in order, in one
MLflow run whose metric steps are the day indices). A failed day raises before anything of it is
registered; the MLflow run ends FAILED and the CLI exits non-zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from recsys_matta.distributed.context import DistContext
from recsys_matta.errors import UserError
from recsys_matta.jobs.mixnmatch import mixnmatch_report
from recsys_matta.jobs.scoring import raw_frames, score_pyfunc
from recsys_matta.jobs.train import prepare, summary_table
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


def register_and_gate(
    trainer: OnlineTrainer, record: DayRecord, data: Path, tracker, console: Console | None = None, model=None
):
    """Log the current Student as a pyfunc, register it (`candidate`), and run the gate.

    Held-out data for the gate (`daily.gate_holdout`): the next day when it exists (`auto`,
    `next`): candidate and champion both loaded from the registry and scored on its raw rows;
    else the trained day's progressive metric for the candidate and the champion re-scored on
    that same day.
    """
    from recsys_matta.serving.pyfunc import log_student
    from recsys_matta.tracking.registry import (
        champion_version,
        gate,
        load_champion,
        load_version,
        register,
        version_tags,
    )

    spec, cfg = trainer.spec, trainer.cfg
    day, name, label = record.day, cfg.registered_model, trainer.eval_label
    if model is None:
        model, _ = trainer.export()
    student = extract(model, student_choice(model.cfg))
    example = next(raw_frames(spec, data, day, limit=5))
    uri = log_student(
        tracker, student, spec, example, name="student", step=record.day_index, metadata={"day": day}
    )
    baseline_auc = record.baseline.auc_loss if record.baseline else None
    version = register(uri, name, tags=version_tags(day, record.student.auc_loss, baseline_auc))

    days = trainer.reader.days()
    later = days[days.index(day) + 1 :]
    mode = cfg.daily.gate_holdout
    if mode == "next" and not later:
        raise UserError(f"daily.gate_holdout=next but there is no day after {day} under {data}")
    if later and mode in ("auto", "next"):
        holdout = later[0]
        cand = score_pyfunc(load_version(name, version), spec, data, holdout, label).auc_loss
    else:
        holdout, cand = day, record.student.auc_loss
    current = champion_version(name)
    champ = None
    if current is not None and current != version:
        champ = score_pyfunc(load_champion(name), spec, data, holdout, label).auc_loss
    decision = gate(name, version, cand, champ, day=holdout, tracker=tracker)
    tracker.log_metrics(
        {
            "gate/candidate_auc_loss": cand,
            "gate/champion_auc_loss": champ,
            "gate/moved": float(decision.moved),
        },
        step=record.day_index,
    )
    if console is not None:
        champ_s = "none" if champ is None else f"{champ:.5f} (v{current})"
        console.print(
            f"[bold]gate[/bold] {name} v{version} on {holdout} ({'next day' if holdout != day else 'progressive'}): "
            f"candidate AucLoss {cand:.5f} vs champion {champ_s} -> "
            + ("[green]champion moved[/green]" if decision.moved else "[yellow]champion stays[/yellow]")
            + f" ({decision.reason})"
        )
    return decision


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
    """Run the daily job for `days_expr` (one day, `A..B` or a comma list). See module docstring."""
    from recsys_matta.tracking.tracker import open_tracker

    spec, cfg = prepare(spec_path, config_path, list(overrides))
    ctx = DistContext.from_env(cfg.train.device)
    workdir = Path(workdir)
    trainer = OnlineTrainer(spec, cfg, data, workdir, ctx=ctx, force=force)
    days = trainer.reader.select_days(days_expr)  # a missing day is a DataError, before any run
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
        trainer.sinks = (TrackerSink(tracker),)
        for day in days:
            records = trainer.run([day])
            if not records:
                if console is not None and ctx.is_main:
                    console.print(f"{day}: already finished in {workdir}; nothing to do (use --force to redo)")
                continue
            if cfg.daily.register_student:
                models = trainer.export()  # a collective when the tables are sharded
                if ctx.is_main:
                    out.decisions.append(register_and_gate(trainer, records[0], data, tracker, console, models[0]))
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
