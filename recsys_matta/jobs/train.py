"""`matta train`: resolve spec + config, run the online loop, print the per-day table."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recsys_matta.data.encoded import summarize_counts
from recsys_matta.distributed.context import DistContext
from recsys_matta.jobs.lock import workdir_lock
from recsys_matta.specs import FeatureSpec, load_spec
from recsys_matta.specs.config import RunConfig, resolve_config
from recsys_matta.train.checkpoint import atomic_write_text
from recsys_matta.train.records import DayRecord
from recsys_matta.online.trainer import MetricsSink, OnlineTrainer


class ConsoleSink(MetricsSink):
    """One line per finished day on the console, flushed at once: what a scheduler's log file
    shows while the job runs (progress bars only draw on terminals)."""

    def __init__(self, console: Console):
        self.console = console

    def log_day(self, record: DayRecord, step: int) -> None:
        self.console.print(day_line(record), markup=False, highlight=False, soft_wrap=True)
        self.console.file.flush()


def day_line(r: DayRecord) -> str:
    """`2026-01-02 | 20000 rows read, 19990 kept, ... | AucLoss student 0.2871 ta ... | 3.1 s eval, 27.6 s train`."""
    models = ", ".join(f"{m} {r.auc_loss(m):.4f}" for m in ("student", "ta", "baseline") if r.metrics_of(m))
    secs = f"{r.seconds.get('eval', 0):.1f} s eval, {r.seconds.get('train', 0):.1f} s train"
    return f"{r.day} | {summarize_counts(r.reader)} | {r.train_steps} steps | AucLoss {models} | {secs}"


def prepare(spec_path: Path, config_path: Path | None, overrides: list[str]) -> tuple[FeatureSpec, RunConfig]:
    return load_spec(spec_path), resolve_config(config_path, overrides)


def train_job(
    spec: FeatureSpec,
    cfg: RunConfig,
    data: Path,
    workdir: Path,
    days_expr: str | None = None,
    force: bool = False,
    sinks: tuple[MetricsSink, ...] = (),
    ctx: DistContext | None = None,
    console: Console | None = None,
) -> tuple[OnlineTrainer, list[DayRecord]]:
    """Run the online loop over the selected days; returns the trainer and the new records.
    Holds the work directory's lock throughout (`WorkdirLocked` when another job has it)."""
    ctx = ctx or DistContext.from_env(cfg.train.device)
    workdir = Path(workdir)
    with workdir_lock(workdir, ctx):
        return _train_job(spec, cfg, data, workdir, days_expr, force, sinks, ctx, console)


def _train_job(spec, cfg, data, workdir, days_expr, force, sinks, ctx, console):
    if console is not None and ctx.is_main:
        sinks = (*sinks, ConsoleSink(console))
    trainer = OnlineTrainer(spec, cfg, data, workdir, ctx=ctx, sinks=sinks, force=force)
    days = trainer.reader.select_days(days_expr)
    if ctx.is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(workdir / "run_config.json", json.dumps(cfg.model_dump(mode="json"), indent=2))
    records = trainer.run(days)
    if ctx.is_main and console is not None:
        console.print(summary_table(trainer.history))
    return trainer, records


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100 * x:+.2f}%" if pct else f"{x:.4f}"


def summary_table(history: list[DayRecord]) -> Table:
    """Per-day AucLoss of Student / TA / baseline and the relative improvements."""
    t = Table(title="AucLoss = 1 - AUROC per day (progressive validation; lower is better)")
    for col in ("day", "rows", "student", "ta", "baseline", "student vs base", "ta vs base", "loss"):
        t.add_column(col, justify="right", no_wrap=True, min_width=10 if col == "day" else None)
    for r in history:
        t.add_row(
            r.day,
            str(r.eval_rows),
            _fmt(r.student.auc_loss),
            _fmt(r.ta.auc_loss) if r.ta else "-",
            _fmt(r.baseline.auc_loss) if r.baseline else "-",
            _fmt(r.student_rel_improvement, pct=True),
            _fmt(r.ta_rel_improvement, pct=True),
            _fmt(r.loss.get("total")),
        )
    return t
