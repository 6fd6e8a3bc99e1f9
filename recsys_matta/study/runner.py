"""Run the study's (arm, seed) jobs: a pool of `jobs` long-lived worker processes (spawned, one
torch thread each), each job an `OnlineTrainer` run in `<out>/runs/<arm>/seed<k>/`.

Resuming: a job whose `metrics.jsonl` holds every day is skipped without starting it; an
interrupted job restarts from its last checkpoint (the trainer skips finished days). Each job
folder keeps `job.json` (its settings): resuming with different settings is an error rather
than a silent mix of two configurations.

Workers are reused across jobs so torch / torchrec are imported once per worker, not once per
job (about 10 s of CPU each on these machines). This module imports no torch at module level:
a spawned worker loads it when its first job starts, after its thread limits are set.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from recsys_matta.errors import UserError

Echo = Callable[[str], None]
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Job:
    """One (arm, seed) training run.

    Args:
        arm: arm name.
        seed: the seed (`train.seed`).
        spec: feature spec path.
        data: partition root.
        config: run config YAML (or None).
        workdir: the job's run directory.
        days: days to train, in order.
        overrides: its run-config overrides (see `arms.StudySettings.job_overrides`).
    """

    arm: str
    seed: int
    spec: str
    data: str
    config: str | None
    workdir: str
    days: tuple[str, ...]
    overrides: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.arm}/seed{self.seed}"

    def identity(self) -> dict:
        """What must not change when a job is resumed (days may be extended)."""
        return {
            "arm": self.arm,
            "seed": self.seed,
            "spec": self.spec,
            "data": self.data,
            "config": self.config,
            "overrides": result_overrides(self.overrides),
        }


def job_config(job: Job):
    """The job's resolved RunConfig (rebuilt from its overrides, not read from a checkpoint)."""
    from recsys_matta.specs.config import resolve_config

    return resolve_config(job.config, list(job.overrides))


# settings that change what a job keeps or shows, not what it computes: a resumed job may differ
NO_RESULT_KEYS = ("train.keep_checkpoints", "train.progress")


def result_overrides(overrides) -> list[str]:
    """`overrides` without the keys of `NO_RESULT_KEYS`."""
    return [o for o in overrides if o.partition("=")[0] not in NO_RESULT_KEYS]


def done_days(workdir: str | Path) -> list[str]:
    """Days recorded in a job's `metrics.jsonl` (empty when there is none)."""
    from recsys_matta.train.records import read_records

    return [r.day for r in read_records(Path(workdir))]


def is_finished(job: Job) -> bool:
    return set(job.days) <= set(done_days(job.workdir))


def check_identity(job: Job) -> None:
    """Write `job.json`, or check it matches when the folder holds a job with finished days."""
    folder = Path(job.workdir)
    path = folder / "job.json"
    started = bool(done_days(folder)) or any((folder / "checkpoints").glob("day=*.pt"))
    if path.is_file() and started:  # a job that never finished a day may change its settings
        old = json.loads(path.read_text())
        old["overrides"] = result_overrides(old.get("overrides", []))
        if old != job.identity():
            changed = sorted(k for k in job.identity() if old.get(k) != job.identity()[k])
            raise UserError(
                f"{folder} holds job {job.label} run with other settings (changed: {', '.join(changed)}); "
                f"use another --out, or delete that folder to rerun it"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job.identity(), indent=2))


# --------------------------------------------------------------------------- in the worker
def _init_worker(threads: int) -> None:
    for k in _THREAD_ENV:
        os.environ[k] = str(threads)  # before torch is imported in this process


def run_job(job: Job) -> dict:
    """Train one job to its last day (in a worker process). Never raises: returns
    `{"ok": bool, "error": traceback or None, "days_run", "wall_s"}`."""
    t0 = time.perf_counter()
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(workdir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        import torch

        from recsys_matta.distributed.context import DistContext
        from recsys_matta.jobs.train import train_job
        from recsys_matta.specs import load_spec

        spec = load_spec(job.spec)
        cfg = job_config(job)
        use_cuda = cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())
        ctx = DistContext(device=torch.device("cuda" if use_cuda else "cpu"))  # never a process group
        _, records = train_job(spec, cfg, Path(job.data), workdir, days_expr=",".join(job.days), ctx=ctx)
        return {"ok": True, "error": None, "days_run": len(records), "wall_s": time.perf_counter() - t0}
    except Exception:  # reported by the parent; the other jobs go on
        err = traceback.format_exc()
        logging.getLogger(__name__).error("job %s failed:\n%s", job.label, err)
        return {"ok": False, "error": err, "days_run": 0, "wall_s": time.perf_counter() - t0}
    finally:
        root.removeHandler(handler)
        handler.close()


# --------------------------------------------------------------------------- in the parent
@dataclass
class JobOutcome:
    """What happened to one job in this invocation.

    Args:
        job: the job.
        status: `skipped` (already finished), `done`, `failed` or `not_run`.
        wall_s: seconds it ran in this invocation (worker start-up included for a worker's
            first job).
        days_run: days trained in this invocation.
        error: the traceback of a failure.
    """

    job: Job
    status: str
    wall_s: float = 0.0
    days_run: int = 0
    error: str | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["job"] = self.job.label
        return d


@dataclass
class _Progress:
    """Job-days finished in this invocation, for the ETA."""

    total: int
    start: float = field(default_factory=time.monotonic)
    done: int = 0

    def eta(self) -> str:
        if self.done == 0:
            return "ETA: after the first day"
        left = max(self.total - self.done, 0)
        secs = (time.monotonic() - self.start) / self.done * left
        return f"ETA {_hms(secs)} ({self.done}/{self.total} job-days)"


def _hms(secs: float) -> str:
    secs = int(round(secs))
    return f"{secs // 3600:d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"


def _day_line(job: Job, days: list[str]) -> str:
    from recsys_matta.train.records import read_records

    recs = read_records(Path(job.workdir))
    rec = recs[-1] if recs else None
    parts = [f"{m} {rec.auc_loss(m):.4f}" for m in ("student", "ta", "baseline") if rec and rec.metrics_of(m)]
    done = sum(d in set(days) for d in job.days)
    return f"  {job.label}: day {done}/{len(job.days)} ({rec.day if rec else '?'}) AucLoss " + ", ".join(parts)


def run_jobs(
    jobs: list[Job], parallel: int = 2, echo: Echo = print, poll_seconds: float = 2.0, threads: int = 1
) -> list[JobOutcome]:
    """Run the unfinished `jobs`, `parallel` at a time, printing progress; returns one outcome
    per job (in `jobs` order)."""
    outcomes: dict[str, JobOutcome] = {}
    todo: deque[Job] = deque()
    for job in jobs:
        check_identity(job)
        if is_finished(job):
            outcomes[job.label] = JobOutcome(job, "skipped")
        else:
            todo.append(job)
    skipped = [j.label for j in jobs if j.label in outcomes]
    if skipped:
        echo(f"finished already, skipped: {', '.join(skipped)}")
    progress = _Progress(total=sum(len(set(j.days) - set(done_days(j.workdir))) for j in todo))
    if todo:
        echo(f"running {len(todo)} job(s), {parallel} at a time ({progress.total} job-days)")
        _pool(todo, parallel, threads, poll_seconds, echo, progress, outcomes)
    return [outcomes[j.label] for j in jobs]


def _executor(parallel: int, threads: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=parallel, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads,)
    )


def _stop(executor: ProcessPoolExecutor, wait_for_jobs: bool) -> None:
    executor.shutdown(wait=wait_for_jobs, cancel_futures=True)
    for proc in list((getattr(executor, "_processes", None) or {}).values()):  # stop our workers
        if proc.is_alive():
            proc.terminate()


def _pool(
    todo: deque[Job], parallel: int, threads: int, poll_seconds: float, echo: Echo,
    progress: _Progress, outcomes: dict[str, JobOutcome],
) -> None:  # fmt: skip
    """Keep `parallel` jobs running until `todo` is empty. A worker process that dies (e.g.
    killed for memory) breaks the pool: the jobs running in it are marked failed and a new
    pool runs the rest."""
    running: dict[Future, Job] = {}
    seen: dict[str, int] = {}
    executor = _executor(parallel, threads)
    try:
        while todo or running:
            while todo and len(running) < parallel:
                job = todo.popleft()
                seen[job.label] = len(done_days(job.workdir))
                echo(f"[start] {job.label} ({len(job.days) - seen[job.label]} day(s) to go) -> {job.workdir}")
                running[executor.submit(run_job, job)] = job
            finished, _ = wait(list(running), timeout=poll_seconds, return_when=FIRST_COMPLETED)
            for job in running.values():  # per-day progress of every running job
                days = done_days(job.workdir)
                if len(days) > seen[job.label]:
                    progress.done += len(days) - seen[job.label]
                    seen[job.label] = len(days)
                    echo(f"{_day_line(job, days)} | {progress.eta()}")
            broken = False
            for fut in finished:
                job = running.pop(fut)
                try:
                    res = fut.result()
                except BrokenProcessPool as e:  # the worker process died
                    broken = True
                    res = {"ok": False, "error": f"worker process died: {e}", "days_run": 0, "wall_s": 0.0}
                status = "done" if res["ok"] else "failed"
                outcomes[job.label] = JobOutcome(job, status, res["wall_s"], res["days_run"], res["error"])
                if res["ok"]:
                    trained = f"{res['days_run']} day(s) trained"
                    echo(f"[done] {job.label} in {_hms(res['wall_s'])} ({trained}) | {progress.eta()}")
                else:
                    tail = "\n".join(str(res["error"]).strip().splitlines()[-3:])
                    echo(f"[failed] {job.label} (log: {Path(job.workdir) / 'train.log'}):\n{tail}")
            if broken:  # every job of the broken pool is lost (its finished days are kept)
                for fut, job in list(running.items()):
                    running.pop(fut)
                    err = "its worker pool broke (another worker process died); rerun to resume"
                    outcomes[job.label] = JobOutcome(job, "failed", error=err)
                    echo(f"[failed] {job.label}: {err}")
                _stop(executor, wait_for_jobs=False)
                executor = _executor(parallel, threads)
    finally:
        for job in list(todo) + list(running.values()):
            outcomes.setdefault(job.label, JobOutcome(job, "not_run"))
        _stop(executor, wait_for_jobs=not running)
