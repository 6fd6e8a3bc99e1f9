"""`make demo` / `matta demo`: the embedded default end to end on 2 CPU cores in a few minutes.

Synthetic days with a hidden Teacher -> the daily job as a backfill over all days but the last
(each day: the champion gate of the previous day's candidate on this day, progressive
validation, training, MLflow run metrics, registration) -> the Mix'n'Match report and the gate of
the last candidate on the held-out last day, all in `<workdir>/mlflow.db`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from recsys_matta.errors import UserError
from recsys_matta.jobs.console import job_console

SPEC = Path(__file__).resolve().parents[2] / "feature_specs" / "synthetic.yaml"
START = date(2026, 1, 1)


def run_demo(workdir: Path, days: int, rows_per_day: int, seed: int, overrides: list[str]) -> None:
    from recsys_matta.data.partitions import list_days
    from recsys_matta.data.synthetic import generate
    from recsys_matta.jobs.commands import gate_day
    from recsys_matta.jobs.daily import run_daily
    from recsys_matta.specs import load_spec

    console = job_console()
    if not SPEC.is_file():
        raise UserError(f"{SPEC}: the shipped synthetic spec is missing (run the demo from a checkout)")
    spec = load_spec(SPEC)
    workdir = Path(workdir)
    data = workdir / "data"
    have = list_days(data, spec.partition) if data.is_dir() else []
    if len(have) != days:
        console.rule(f"generating {days} synthetic days x {rows_per_day:,} rows -> {data}")
        generate(out=data, days=days, rows_per_day=rows_per_day, seed=seed, start_date=START)
        have = list_days(data, spec.partition)
    train_days = f"{have[0]}..{have[-2]}"
    console.rule(f"daily job, backfill {train_days} (held out: {have[-1]})")
    out = run_daily(SPEC, data, workdir / "run", train_days, overrides=overrides, console=console)
    console.rule(f"champion gate of the last candidate on the held-out {have[-1]}")
    last = gate_day(SPEC, data, workdir / "run", have[-1], None, overrides, console=console)
    if out.report is not None:
        from recsys_matta.jobs.mixnmatch import wide_narrow_wide_markdown

        days_scored = ", ".join(out.report["days"])
        console.rule(f"elastic Students (wide-narrow-wide) on the held-out {days_scored}")
        console.print(wide_narrow_wide_markdown(out.report), markup=False, soft_wrap=True)
    console.rule("done")
    for d in out.decisions + ([last] if last is not None else []):
        console.print(d.summary(), markup=False, highlight=False)
    if out.tracking_uri:
        console.print(f"see the run: mlflow ui --backend-store-uri {out.tracking_uri}")
