"""`matta study`: run every (arm, seed) job, then regenerate the study's report.

    <out>/runs/<arm>/seed<k>/     one OnlineTrainer run per job (checkpoints, metrics.jsonl, train.log)
    <out>/results.json            {dataset: {arm: {model: stats}}} (see `results`)
    <out>/results.md              the dataset's markdown section (tables, figures)
    <out>/study.json              settings, days, job times, Mix'n'Match and preconditioner summaries
    <out>/figures/*.png           AucLoss per day per arm, Shampoo factors heatmap
    <out>/mixnmatch/              report.json / report.md / frontier.png
    <out>/mlflow.db, mlartifacts  one MLflow run of experiment `matta-study` (unless disabled)

Re-running the command resumes: finished jobs are skipped, unfinished ones continue from their
last checkpoint, and the report is rebuilt from all the jobs' records.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from recsys_matta.errors import UserError
from recsys_matta.study.arms import ARM_BY_NAME, BASELINE, QUICK_DAYS, StudySettings
from recsys_matta.study.report import arm_title, section
from recsys_matta.study.results import aggregate, day_curves, job_seconds, json_safe, scored_days
from recsys_matta.study.runner import Echo, Job, JobOutcome, job_config, run_jobs
from recsys_matta.train.checkpoint import atomic_write_text

log = logging.getLogger(__name__)
EXPERIMENT = "matta-study"


def study_days(settings: StudySettings, spec) -> list[str]:
    from recsys_matta.data.reader import DayReader

    days = DayReader(spec, settings.data, 1).select_days(settings.days)
    return days[:QUICK_DAYS] if settings.quick else days


def plan_jobs(settings: StudySettings, days: list[str]) -> list[Job]:
    """One job per (arm, seed), the host arm first (it also trains the baseline)."""
    arms = sorted(settings.selected_arms(), key=lambda a: a.name != settings.host_arm())
    return [
        Job(
            arm=arm.name,
            seed=seed,
            spec=str(Path(settings.spec).resolve()),
            data=str(Path(settings.data).resolve()),
            config=None if settings.config is None else str(Path(settings.config).resolve()),
            workdir=str(Path(settings.out).resolve() / "runs" / arm.name / f"seed{seed}"),
            days=tuple(days),
            overrides=tuple(settings.job_overrides(arm, seed, len(days))),
        )
        for seed in settings.seed_list()
        for arm in arms
    ]


def run_study(settings: StudySettings, echo: Echo = print, report_only: bool = False) -> dict:
    """Run (or resume) the study and rebuild its report; returns `study.json`'s content.
    Raises UserError after writing the report when a job failed."""
    from recsys_matta.specs import load_spec

    spec = load_spec(settings.spec)
    days = study_days(settings, spec)
    jobs = plan_jobs(settings, days)
    for job in jobs:  # a bad key or value fails here, not in every worker
        job_config(job)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    echo(
        f"study {settings.name or spec.name}: {len(settings.selected_arms())} arm(s) x "
        f"{len(settings.seed_list())} seed(s) on {len(days)} day(s) {days[0]}..{days[-1]} -> {out}"
    )
    t0 = time.perf_counter()
    if report_only:
        outcomes = [JobOutcome(j, "not_run") for j in jobs]
    else:
        try:
            outcomes = run_jobs(jobs, settings.jobs, echo, settings.poll_seconds)
        except KeyboardInterrupt:
            echo("interrupted: finished days are checkpointed; rerun the same command to resume")
            raise
        echo(f"jobs finished in {time.perf_counter() - t0:.0f} s; building the report")
    meta = build_report(settings, spec, days, jobs, outcomes, echo)
    failed = [o.job.label for o in outcomes if o.status in ("failed", "not_run") and not report_only]
    if failed:
        raise UserError(
            f"{len(failed)} job(s) did not finish: {', '.join(failed)} (see their train.log; rerun to resume)"
        )
    return meta


def _eval_label(job: Job) -> str:
    return job_config(job).eval_label


def build_report(
    settings: StudySettings, spec, days: list[str], jobs: list[Job], outcomes: list[JobOutcome], echo: Echo = print
) -> dict:
    """Aggregate the jobs' records and write results.json / results.md / study.json / figures,
    then log them to MLflow."""
    from recsys_matta.study.figures import plot_arm_curves

    out = Path(settings.out)
    runs = out / "runs"
    name = settings.name or spec.name
    arms = [a.name for a in settings.selected_arms()]
    seeds = settings.seed_list()
    host = settings.host_arm()
    results = aggregate(runs, arms, seeds, days, host)
    curves = day_curves(runs, arms, seeds, days, host)
    figures: dict[str, str] = {}
    titles = {a: arm_title(a) for a in [BASELINE, *ARM_BY_NAME]}
    if curves:
        plot_arm_curves(curves, days, scored_days(days), out / "figures" / "auc_loss_per_day.png", titles)
        figures["auc_loss_per_day"] = "figures/auc_loss_per_day.png"
    host_job = next(j for j in jobs if j.arm == host and j.seed == seeds[0])
    mix = _mixnmatch(host_job, spec, days, out, figures, echo)
    elastic = _elastic(jobs, host, spec, days, _eval_label(host_job), out, figures, echo)
    pre = _preconditioner(host_job, spec, out, figures, echo)
    meta = {
        "name": name,
        "spec": str(settings.spec),
        "data": str(settings.data),
        "days": days,
        "scored_days": scored_days(days),
        "seeds": seeds,
        "arms": arms,
        "host_arm": host,
        "quick": settings.quick,
        "overrides": settings.overrides,
        "eval_label": _eval_label(host_job),
        "job_overrides": {j.label: list(j.overrides) for j in jobs},
        "jobs": {
            o.job.label: {"status": o.status, "wall_s": round(o.wall_s, 1), **job_seconds(Path(o.job.workdir))}
            for o in outcomes
        },
        "mixnmatch": mix,
        "elastic": elastic,
        "preconditioner": pre,
        "figures": figures,
        "settings": settings.model_dump(mode="json"),
    }
    atomic_write_text(out / "results.json", json.dumps(json_safe({name: results}), indent=2) + "\n")
    atomic_write_text(out / "study.json", json.dumps(json_safe(meta), indent=2) + "\n")
    tuning = out / "tuning.md"
    tuning_text = tuning.read_text() if tuning.is_file() else None
    atomic_write_text(out / "results.md", section(name, json_safe(results), json_safe(meta), figures, tuning_text))
    echo(f"wrote {out / 'results.md'}, {out / 'results.json'}")
    if settings.tracking:
        _log_mlflow(settings, name, json_safe(results), curves, days, out, echo)
    return meta


def _mixnmatch(job: Job, spec, days: list[str], out: Path, figures: dict, echo: Echo) -> dict:
    from recsys_matta.study.figures import mixnmatch_from_checkpoint

    if len(days) < 2:
        return {"skipped": "needs at least 2 days (train through the second-to-last, score the last)"}
    try:
        report = mixnmatch_from_checkpoint(
            Path(job.workdir), spec, job_config(job), Path(job.data), days, out / "mixnmatch"
        )
    except UserError as e:
        echo(f"Mix'n'Match skipped: {e}")
        return {"skipped": str(e)}
    figures["frontier"] = "mixnmatch/frontier.png"
    return {**report, "seed": job.seed}


def _elastic(jobs: list[Job], host: str, spec, days: list[str], label: str, out: Path, figures: dict, echo: Echo) -> dict:
    from recsys_matta.study.elastic import elastic_frontier, plot_elastic_frontier, shared_matta_arms

    if not shared_matta_arms(sorted({j.arm for j in jobs})):
        return {"skipped": "no shared MatTA arm"}
    try:
        frontier = elastic_frontier(jobs, host, spec, days, label, echo)
    except UserError as e:
        echo(f"elastic frontier skipped: {e}")
        return {"skipped": str(e)}
    plot_elastic_frontier(frontier, out / "figures" / "elastic_frontier.png")
    figures["elastic_frontier"] = "figures/elastic_frontier.png"
    return frontier


def _preconditioner(job: Job, spec, out: Path, figures: dict, echo: Echo) -> dict:
    from recsys_matta.study.figures import block_share, plot_preconditioner, preconditioner_factors

    try:
        info = preconditioner_factors(Path(job.workdir), spec, job_config(job))
    except UserError as e:
        echo(f"preconditioner heatmap skipped: {e}")
        return {"skipped": str(e)}
    if info["factors"] is None:
        return {"skipped": f"no Shampoo statistics for {info['layer']} in the checkpoint of {info['day']}"}
    plot_preconditioner(info, out / "figures" / "preconditioner.png")
    figures["preconditioner"] = "figures/preconditioner.png"
    left, right = info["factors"]
    n_out, n_in = info["student_block"]
    return {
        "seed": job.seed,
        "day": info["day"],
        "layer": info["layer"],
        "shape": list(info["shape"]),
        "block": list(info["block"]),
        "student_block": [n_out, n_in],
        "left_block_share": block_share(left, n_out),
        "right_block_share": block_share(right, n_in),
    }


def _log_mlflow(
    settings: StudySettings, name: str, results: dict, curves: dict, days: list[str], out: Path, echo: Echo
) -> None:
    from recsys_matta.tracking import open_tracker

    with open_tracker(out, EXPERIMENT, f"study {name}", tags={"dataset": name, "quick": settings.quick}) as tracker:
        tracker.log_params({
            "study": settings.model_dump(mode="json"),
            "dataset": name,
            "days": f"{days[0]}..{days[-1]}",
            "num_days": len(days),
        })  # fmt: skip
        tracker.log_metrics({
            f"{arm}/{model}/{k}": v
            for arm, models in results.items()
            for model, stats in models.items()
            for k, v in stats.items()
            if k.endswith(("_mean", "_std")) and v is not None
        })  # fmt: skip
        for i, _day in enumerate(days):
            row = {f"day/{key}/auc_loss": ys[i] for key, ys in curves.items() if ys[i] == ys[i]}
            if row:
                tracker.log_metrics(row, step=i)
        for f in ("results.json", "results.md", "study.json"):
            tracker.log_artifact(out / f)
        for folder in ("figures", "mixnmatch"):
            if (out / folder).is_dir():
                tracker.log_artifact(out / folder, folder)
        echo(f"MLflow run {tracker.run_id} (experiment {EXPERIMENT!r}) in {out}")
