"""`matta register`, `matta compare`, `matta extract`: work on an existing run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recsys_matta.data.partitions import parse_day
from recsys_matta.distributed.context import DistContext
from recsys_matta.errors import UserError
from recsys_matta.jobs.lock import workdir_lock
from recsys_matta.jobs.registering import gate_candidate, register_candidate, register_elastic
from recsys_matta.specs import load_spec
from recsys_matta.specs.config import RunConfig, resolve_config
from recsys_matta.train.checkpoint import load_newest
from recsys_matta.online.trainer import OnlineTrainer


def load_trainer(
    spec_path: Path, data: Path, workdir: Path, config_path: Path | None, overrides: list[str]
) -> OnlineTrainer:
    """A trainer restored from the newest checkpoint in `workdir`. Without a config file or
    overrides, the run config is the one stored in that checkpoint."""
    spec = load_spec(spec_path)
    found = load_newest(Path(workdir) / "checkpoints", lambda d: parse_day(d, spec))
    if found is None:
        raise UserError(f"{workdir}: no checkpoints (run `matta train` or `matta daily` first)")
    if config_path is None and not overrides:
        cfg = RunConfig.model_validate(found[1]["config"])
    else:
        cfg = resolve_config(config_path, overrides)
    trainer = OnlineTrainer(spec, cfg, data, workdir, ctx=DistContext(device=DistContext.from_env(cfg.train.device).device))
    trainer.restore()
    return trainer


def _open(trainer: OnlineTrainer, run_name: str):
    from recsys_matta.tracking.tracker import open_tracker, set_http_limits

    set_http_limits(trainer.cfg.tracking.http_retries, trainer.cfg.tracking.http_timeout_s)
    return open_tracker(trainer.workdir, trainer.cfg.experiment, run_name)


def register_latest(spec_path, data, workdir, config_path, overrides, console: Console) -> int:
    """Register the Student of the newest checkpoint as `candidate` (the next daily run gates
    it; the first version of a model becomes the champion at once). Returns the version."""
    with workdir_lock(workdir):  # not while a daily job registers from this work directory
        trainer = load_trainer(spec_path, data, workdir, config_path, overrides)
        record = trainer.history[-1]
        with _open(trainer, f"register {record.day}") as tracker:
            version, _ = register_candidate(trainer, record, Path(data), tracker, console)
    return version


def gate_day(spec_path, data, workdir, day, config_path, overrides, console: Console):
    """The delayed gate alone: the pending candidate vs the champion on `day` (no training)."""
    with workdir_lock(workdir):  # not while a daily job gates from this work directory
        trainer = load_trainer(spec_path, data, workdir, config_path, overrides)
        (day,) = trainer.reader.select_days(day)
        with _open(trainer, f"gate {day}") as tracker:
            decision = gate_candidate(trainer.spec, trainer.cfg, Path(data), day, tracker, len(trainer.done_days), console)
    if decision is None:
        console.print(f"gate on {day}: no candidate to judge (none pending, or it has seen {day})")
    return decision


def compare(spec_path, data, workdir, days_expr, config_path, overrides, console: Console) -> list[dict]:
    """Student / TA / baseline progressive AucLoss (metrics.jsonl) and the registered champion
    re-scored on the same days."""
    from recsys_matta.jobs.scoring import score_pyfunc
    from recsys_matta.tracking.registry import champion_version, load_champion
    from recsys_matta.tracking.tracker import configure_mlflow

    trainer = load_trainer(spec_path, data, workdir, config_path, overrides)
    by_day = {r.day: r for r in trainer.history}
    days = trainer.reader.select_days(days_expr) if days_expr else list(by_day)
    configure_mlflow(workdir)
    name = trainer.cfg.registered_model
    version = champion_version(name)
    champion = load_champion(name) if version is not None else None
    rows = []
    t = Table(title=f"AucLoss by day (champion: {name} v{version})" if version else "AucLoss by day (no champion)")
    for c in ("day", "student", "ta", "baseline", "champion"):
        t.add_column(c, justify="right")
    for day in days:
        r = by_day.get(day)
        row: dict = {"day": day}
        for m in ("student", "ta", "baseline"):
            row[m] = math.nan if r is None else r.auc_loss(m)
        row["champion"] = (
            score_pyfunc(champion, trainer.spec, Path(data), day, trainer.eval_label).auc_loss
            if champion is not None
            else math.nan
        )
        rows.append(row)
        t.add_row(day, *("-" if math.isnan(row[m]) else f"{row[m]:.5f}" for m in ("student", "ta", "baseline", "champion")))
    console.print(t)
    return rows


def extract_command(spec_path, data, workdir, days_expr, register_ks, budget, config_path, overrides, console: Console) -> dict:
    from recsys_matta.jobs.mixnmatch import best_under_budget, mixnmatch_report, parse_budget

    column, limit = parse_budget(str(budget)) if budget is not None else (None, None)
    trainer = load_trainer(spec_path, data, workdir, config_path, overrides)
    if trainer.cfg.single_tower:
        raise UserError(f"{workdir}: a Student-only run has no TA to extract from")
    all_days = trainer.reader.days()
    if days_expr:
        days = trainer.reader.select_days(days_expr)
    else:
        later = all_days[all_days.index(trainer.done_days[-1]) + 1 :]
        if not later:
            raise UserError(f"no day after the last trained day {trainer.done_days[-1]} under {data}: give --days")
        days = later[:1]
    model, baseline = trainer.export()
    out_dir = Path(workdir) / "mixnmatch"
    report = mixnmatch_report(
        model, baseline, trainer.spec, Path(data), days, trainer.eval_label, out_dir,
        all_max=trainer.cfg.daily.mixnmatch_all_max, batch_size=trainer.cfg.train.eval_batch_size,
    )  # fmt: skip
    console.print((out_dir / "report.md").read_text())
    console.print(f"frontier plot: {out_dir / 'frontier.png'}")
    if column is not None:
        best = best_under_budget(report, limit, column)
        report["budget"] = {column: limit, "best": best}
        (out_dir / "budget.json").write_text(json.dumps(report["budget"], indent=2))
        console.print(
            f"best with {column} <= {limit:g}: {best['choice']} ({best['dense_params']:,} params, "
            f"{best['flops_per_example']:,.0f} FLOPs/example, AucLoss {best['auc_loss']:.5f})"
            if best
            else f"no extracted model has {column} <= {limit:g}",
            markup=False,
        )
    with _open(trainer, f"extract {','.join(days)}") as tracker:
        tracker.log_dict(report, "mixnmatch/report.json")
        tracker.log_artifact(out_dir / "report.md", "mixnmatch")
        tracker.log_artifact(out_dir / "frontier.png", "mixnmatch")
        if register_ks:
            register_elastic(tracker, model, trainer.spec, Path(data), days, report, register_ks, trainer.cfg.registered_model, console)
    return report
