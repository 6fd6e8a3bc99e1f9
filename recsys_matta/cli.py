"""`matta` command line. Each command parses its arguments and calls one library function;
heavy imports (torch, torchrec, mlflow) happen inside the commands so `matta --help` is fast."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="recsys-matta: MatTA online CTR training (data, training, MLflow registry).")
convert_app = typer.Typer(no_args_is_help=True, help="Turn public datasets into day partitions.")
app.add_typer(convert_app, name="convert")


def _console():
    from recsys_matta.jobs.console import job_console

    return job_console()


@app.callback()
def _options(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", envvar="MATTA_VERBOSE", help="Also show MLflow's INFO lines and registry messages"
    ),
) -> None:
    """recsys-matta: MatTA online CTR training (data, training, MLflow registry)."""
    from recsys_matta.tracking.verbosity import quiet_mlflow

    quiet_mlflow(not verbose)


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def generate(
    out: Path = typer.Option(..., help="Output root; writes <out>/day=YYYY-MM-DD/part-*.parquet"),
    days: int = typer.Option(..., min=1, help="Number of days"),
    rows_per_day: int = typer.Option(..., min=1, help="Rows per day"),
    seed: int = typer.Option(0, help="Random seed (same seed, same bytes)"),
    start_date: str = typer.Option("2026-01-01", help="First day, YYYY-MM-DD"),
) -> None:
    """Generate synthetic <user, context, item> days with a hidden Teacher."""
    from recsys_matta.data.synthetic import generate as run

    try:
        start = date.fromisoformat(start_date)
    except ValueError:
        _fail(f"--start-date {start_date!r} is not YYYY-MM-DD")
    written = run(out=out, days=days, rows_per_day=rows_per_day, seed=seed, start_date=start)
    typer.echo(f"wrote {len(written)} days x {rows_per_day} rows to {out}")


@convert_app.command("movielens")
def convert_movielens(
    input: Path = typer.Option(..., help="Folder with ratings.csv, movies.csv, tags.csv"),
    out: Path = typer.Option(..., help="Output root for partitions"),
    period: str = typer.Option("week", help="Partition period: day, week or month"),
) -> None:
    """MovieLens (latest-small layout) -> partitions; label = rating >= 4."""
    from recsys_matta.data.adapters.movielens import convert

    written = convert(input_dir=input, out=out, period=period)
    typer.echo(f"wrote {len(written)} {period} partitions ({written[0]}..{written[-1]}) to {out}")


@convert_app.command("criteo")
def convert_criteo(
    input: Path = typer.Option(..., help="Criteo file: public TSV (no header) or CSV with header"),
    out: Path = typer.Option(..., help="Output root for partitions"),
    days: int = typer.Option(1, min=1, help="Split the rows into N consecutive days"),
    start_date: str = typer.Option("2026-01-01", help="Day of the first partition"),
) -> None:
    """Criteo display-ads data -> N consecutive day partitions."""
    from recsys_matta.data.adapters.criteo import convert

    try:
        start = date.fromisoformat(start_date)
    except ValueError:
        _fail(f"--start-date {start_date!r} is not YYYY-MM-DD")
    written = convert(input_path=input, out=out, days=days, start_date=start)
    typer.echo(f"wrote {len(written)} days ({written[0]}..{written[-1]}) to {out}")


@app.command(context_settings={"allow_extra_args": False})
def train(
    spec: Path = typer.Option(..., help="Feature spec YAML"),
    data: Path = typer.Option(..., help="Data root with day partitions"),
    workdir: Path = typer.Option(..., help="Run directory: checkpoints, metrics.jsonl"),
    days: Optional[str] = typer.Option(None, help="YYYY-MM-DD..YYYY-MM-DD, a comma list, or all"),
    config: Optional[Path] = typer.Option(None, help="Run config YAML"),
    force: bool = typer.Option(False, help="Redo days that are already finished"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. optim.lr=0.01"),
) -> None:
    """Online MatTA training, day by day, with progressive validation."""
    from recsys_matta.jobs.train import prepare, train_job

    spec_, cfg = prepare(spec, config, overrides or [])
    train_job(spec_, cfg, data, workdir, days_expr=days, force=force, console=_console())


@app.command()
def daily(
    spec: Path = typer.Option(..., help="Feature spec YAML"),
    data: Path = typer.Option(..., help="Data root with day partitions"),
    workdir: Path = typer.Option(..., help="Run directory (checkpoints, metrics, DIR/mlflow.db)"),
    day: Optional[str] = typer.Option(None, help="The day to run, YYYY-MM-DD"),
    days: Optional[str] = typer.Option(None, help="Backfill: A..B or a comma list"),
    stage: Optional[str] = typer.Option(
        None, help="Run one stage of --day only (a scheduler's task): gate, train, register, extract or report"
    ),
    register_elastic: Optional[list[int]] = typer.Option(
        None, "--register-elastic", help="--stage extract: register the wide-narrow-wide Student with this K (repeatable)"
    ),
    config: Optional[Path] = typer.Option(None, help="Run config YAML"),
    force: bool = typer.Option(False, help="Redo days that are already finished"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """The daily job: evaluate on the day, train on it, log to MLflow, register, gate, Mix'n'Match."""
    if (day is None) == (days is None):
        _fail("give exactly one of --day (the daily run) or --days (a backfill range)")
    console = _console()
    if stage is not None or register_elastic:
        from recsys_matta.jobs.daily import STAGES, run_stage

        if stage not in STAGES or day is None:
            _fail(f"--stage needs --day and one of {', '.join(STAGES)} (--register-elastic goes with --stage extract)")
        out = run_stage(
            stage, spec, data, workdir, day, config, overrides or [], force=force, console=console,
            register_ks=register_elastic or [],
        )  # fmt: skip
    else:
        from recsys_matta.jobs.daily import run_daily

        out = run_daily(spec, data, workdir, day or days, config, overrides or [], force=force, console=console)
    if out.tracking_uri:
        console.print(f"MLflow run {out.run_id}: mlflow ui --backend-store-uri {out.tracking_uri}")


@app.command("day-ready")
def day_ready(
    spec: Path = typer.Option(..., help="Feature spec YAML (its partition column and format)"),
    data: Path = typer.Option(..., help="Data root with day partitions"),
    day: str = typer.Option(..., help="The day, YYYY-MM-DD"),
    require: str = typer.Option("success", help="success: a marker file in the day's folder; rows: Parquet files with rows"),
    marker: str = typer.Option("_SUCCESS", help="Marker file name (--require success)"),
) -> None:
    """Exit 0 when the day's partition has landed, 1 when not yet (a scheduler's sensor)."""
    from recsys_matta.data.landing import RULES, day_landed
    from recsys_matta.specs import load_spec

    if require not in RULES:
        _fail(f"--require {require!r}: use one of {', '.join(RULES)}")
    landing = day_landed(data, load_spec(spec), day, require, marker)  # type: ignore[arg-type]
    typer.echo(("ready: " if landing.ready else "not ready: ") + landing.why)
    raise typer.Exit(0 if landing.ready else 1)


@app.command()
def register(
    spec: Path = typer.Option(..., help="Feature spec YAML"),
    data: Path = typer.Option(..., help="Data root (held-out days for the gate)"),
    workdir: Path = typer.Option(..., help="Run directory with checkpoints"),
    config: Optional[Path] = typer.Option(None, help="Run config YAML"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Register the Student of the newest checkpoint as `candidate` (the next daily run gates it)."""
    from recsys_matta.jobs.commands import register_latest

    register_latest(spec, data, workdir, config, overrides or [], console=_console())


@app.command()
def gate(
    spec: Path = typer.Option(..., help="Feature spec YAML"),
    data: Path = typer.Option(..., help="Data root"),
    workdir: Path = typer.Option(..., help="Run directory (checkpoints, mlflow.db)"),
    day: str = typer.Option(..., help="A day neither the candidate nor the champion trained on"),
    config: Optional[Path] = typer.Option(None, help="Run config YAML"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """The champion gate alone: the pending candidate vs the champion, both scored on --day."""
    from recsys_matta.jobs.commands import gate_day

    gate_day(spec, data, workdir, day, config, overrides or [], console=_console())


@app.command()
def serve(
    workdir: Optional[Path] = typer.Option(None, help="Run directory whose mlflow.db holds the registry"),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else WORKDIR/mlflow.db)"),
    name: str = typer.Option("matta-student", help="Registered model name"),
    alias: str = typer.Option("champion", help="Alias to serve"),
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(5001, min=1, max=65535, help="Port"),
    workers: int = typer.Option(1, min=1, help="Server worker processes"),
) -> None:
    """Serve models:/NAME@ALIAS over HTTP: POST raw feature rows to /invocations (see README)."""
    from recsys_matta.serving.server import serve as run

    run(workdir, tracking_uri, name, alias, host, port, workers)


@app.command()
def compare(
    spec: Path = typer.Option(..., help="Feature spec YAML"),
    data: Path = typer.Option(..., help="Data root"),
    workdir: Path = typer.Option(..., help="Run directory (metrics.jsonl, mlflow.db)"),
    days: Optional[str] = typer.Option(None, help="Days to show (default: every finished day)"),
    config: Optional[Path] = typer.Option(None, help="Run config YAML"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Student / TA / baseline / champion AucLoss side by side for the given days."""
    from recsys_matta.jobs.commands import compare as run

    run(spec, data, workdir, days, config, overrides or [], console=_console())


@app.command()
def extract(
    spec: Path = typer.Option(..., help="Feature spec YAML"),
    data: Path = typer.Option(..., help="Data root"),
    workdir: Path = typer.Option(..., help="Run directory with checkpoints"),
    days: Optional[str] = typer.Option(None, help="Held-out days to score on (default: the day after the last trained day)"),
    register: Optional[list[int]] = typer.Option(
        None, "--register", help="Register the wide-narrow-wide model with this K (repeatable) as <registered_model>-elastic@wnw-k<K>"
    ),
    budget: Optional[str] = typer.Option(
        None,
        help="Pick the best model within a budget: N or params=N (dense parameters), flops=N (per example), "
        "latency_ms=X (p50 ms per 1,000 rows)",
    ),
    config: Optional[Path] = typer.Option(None, help="Run config YAML"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Mix'n'Match: extract Students of many sizes from the trained TA and score each."""
    from recsys_matta.jobs.commands import extract_command

    extract_command(spec, data, workdir, days, register or [], budget, config, overrides or [], console=_console())


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo_run"), help="Where data, checkpoints and mlflow.db go"),
    days: int = typer.Option(6, min=2, help="Synthetic days (the last one is held out for the gate)"),
    rows_per_day: int = typer.Option(50000, min=1000, help="Rows per synthetic day"),
    seed: int = typer.Option(0),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """The embedded default end to end: synthetic data, daily backfill, registry, Mix'n'Match."""
    from recsys_matta.jobs.demo import run_demo

    run_demo(workdir, days, rows_per_day, seed, overrides or [])


# ---- issue 8: Teacher stage and the ablation study ------------------------------------------
teacher_app = typer.Typer(no_args_is_help=True, help="Teacher soft labels for data with event labels only.")
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("fit")
def teacher_fit(
    spec: Path = typer.Option(..., help="Feature spec YAML (with an event label)"),
    data: Path = typer.Option(..., help="Data root with day partitions"),
    days: str = typer.Option(..., help="Fit days A..B (the last --holdout-days compare the candidates)"),
    out: Path = typer.Option(..., help="Model folder: teacher.joblib + teacher.json"),
    holdout_days: int = typer.Option(1, min=1, help="Last fit days held out to pick the candidate"),
    candidates: str = typer.Option("hgb,logreg", help="Candidates: hgb (gradient boosting), logreg"),
    max_rows: int = typer.Option(2_000_000, min=100, help="Cap on fit rows (seeded sample)"),
    refit: bool = typer.Option(True, help="Refit the chosen candidate on all fit days"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, min=0, help="Threads while fitting (0 = all cores)"),
) -> None:
    """Fit Teacher candidates on earlier days, keep the one with the lower held-out AucLoss."""
    from recsys_matta.teacher.fit import TeacherConfig, fit_teacher

    cfg = TeacherConfig(
        candidates=[c.strip() for c in candidates.split(",") if c.strip()],
        holdout_days=holdout_days, max_rows=max_rows, refit=refit, seed=seed, threads=threads,
    )  # fmt: skip
    rep = fit_teacher(spec, data, days, out, cfg)
    for kind, m in rep["candidates"].items():
        typer.echo(f"{kind}: held-out AucLoss {m['holdout_auc_loss']:.5f} ({m['fit_seconds']} s)")
    typer.echo(f"chosen: {rep['chosen']} -> {out}")


@teacher_app.command("score")
def teacher_score(
    model: Path = typer.Option(..., help="Model folder from `matta teacher fit`"),
    spec: Path = typer.Option(..., help="Feature spec YAML of the source data"),
    data: Path = typer.Option(..., help="Source data root (only read)"),
    days: str = typer.Option(..., help="Days to score, A..B (later than the fit days)"),
    out: Path = typer.Option(..., help="New data root: partitions + teacher column + spec.yaml"),
    column: str = typer.Option("teacher_prob", help="Name of the Teacher probability column"),
    allow_overlap: bool = typer.Option(False, help="Allow scoring days the Teacher was fit on"),
    threads: int = typer.Option(1, min=0, help="Threads while scoring (0 = all cores)"),
) -> None:
    """Write new partitions with the Teacher's probability column and a spec that uses it."""
    from recsys_matta.teacher.fit import score_teacher

    s = score_teacher(model, spec, data, days, out, column=column, allow_overlap=allow_overlap, threads=threads)
    typer.echo(f"wrote {len(s['days'])} day(s), {sum(s['rows'].values())} rows to {out}; spec: {out / 'spec.yaml'}")


@app.command()
def study(
    spec: Path = typer.Option(..., help="Feature spec YAML"),
    data: Path = typer.Option(..., help="Data root with day partitions"),
    out: Path = typer.Option(..., help="Study folder (runs/, results.json, results.md, figures/)"),
    days: Optional[str] = typer.Option(None, help="Days A..B (default: all)"),
    seeds: int = typer.Option(3, min=1, help="Seeds per arm (0..N-1)"),
    jobs: int = typer.Option(2, min=1, help="Training processes at a time"),
    quick: bool = typer.Option(False, help="Smoke mode: 2 seeds, 3 days, preset small, small batches"),
    arms: Optional[str] = typer.Option(None, help="Comma list of arms (default: all)"),
    adam_lr: Optional[float] = typer.Option(None, help="Dense lr of matta_adam (default: baseline.optim.lr)"),
    config: Optional[Path] = typer.Option(None, help="Run config YAML for every arm"),
    name: Optional[str] = typer.Option(None, help="Dataset name in the results (default: the spec's)"),
    tracking: bool = typer.Option(True, help="Log the study to MLflow"),
    report_only: bool = typer.Option(False, help="Rebuild the report from existing runs only"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value for every arm, ARM:key=value for one"),
) -> None:
    """The ablation study (paper Tables 3/4): every arm x seed, then tables, figures, MLflow."""
    from recsys_matta.study.arms import StudySettings
    from recsys_matta.study.command import run_study

    settings = StudySettings(
        spec=spec, data=data, out=out, days=days, seeds=seeds, jobs=jobs, quick=quick,
        overrides=overrides or [], adam_lr=adam_lr, config=config, name=name, tracking=tracking,
        **({"arms": [a.strip() for a in arms.split(",") if a.strip()]} if arms else {}),
    )  # fmt: skip
    run_study(settings, echo=lambda s: typer.echo(s), report_only=report_only)
    typer.echo(f"report: {out / 'results.md'}")


@app.command("study-report")
def study_report(
    datasets: str = typer.Option(..., help="name=STUDY_DIR,... (e.g. synthetic=runs/s,movielens=runs/m)"),
    out: Path = typer.Option(Path("docs"), help="Folder for results.md, results.json, figures/"),
) -> None:
    """Merge study folders into docs/results.md + docs/results.json (figures copied)."""
    from recsys_matta.study.report import merge_studies, parse_datasets

    merged = merge_studies(parse_datasets(datasets), out)
    typer.echo(f"wrote {out / 'results.md'} and {out / 'results.json'} ({', '.join(merged)})")


def main(argv: Optional[list[str]] = None) -> None:
    import logging
    import os

    from recsys_matta.errors import ServiceError, UserError

    # warnings (an unreadable checkpoint skipped, ...) reach stderr as one line each
    logger = logging.getLogger("recsys_matta")
    for h in [h for h in logger.handlers if getattr(h, "matta_cli", False)]:
        logger.removeHandler(h)  # main() called again in one process: write to today's stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.matta_cli = True  # type: ignore[attr-defined]
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False  # not twice when a library configures root
    # logs stay readable in scheduler output: no per-download progress bars from MLflow
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    try:
        app(args=argv, standalone_mode=True)
    except UserError as e:  # expected bad input: one clear line, no traceback
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except ServiceError as e:  # the tracking server down: one line naming it, no traceback
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    finally:
        logger.propagate = propagate


if __name__ == "__main__":
    main()
