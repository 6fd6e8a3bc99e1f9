"""The online (daily) MatTA loop (docs/architecture.md section 6, "The online loop"): the day policy, nothing else.

    for day in days (chronological):
        skip it if finished (unless --force: restore the state before it)
        check the day's data            # rows, column types vs the first day, loss budget of
                                        # dropped rows from the label columns (data/quality.py)
        record = evaluate(day)          # progressive validation: before training on the day
        train(day)                      # one pass, through the engine's TrainStep
        checkpoint(day)                 # atomic; then metrics.jsonl and the sinks

A day that fails a check raises `DayDataError` before anything of it is trained or recorded.
The newest checkpoint that can be read is the state (an unreadable one is skipped with a
warning naming it).

Where the models live and how a step runs is the engine's business (recsys_matta.distributed:
TorchRec DMP with FBGEMM's fused tables, at every world size).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from recsys_matta.data.batch import Batch
from recsys_matta.data.encode import ReadCounts
from recsys_matta.data.partitions import day_dir, parse_day
from recsys_matta.data.quality import check_counts, check_drift, check_has_rows, check_ids
from recsys_matta.data.reader import DayReader
from recsys_matta.distributed.context import DistContext
from recsys_matta.distributed.engine import Engine
from recsys_matta.distributed.factory import make_engine
from recsys_matta.errors import UserError
from recsys_matta.models import MatTAModel
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.config import RunConfig
from recsys_matta.train.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_newest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from recsys_matta.train.evaluate import evaluate_day
from recsys_matta.train.records import METRICS_FILE, DayRecord, write_records
from recsys_matta.train.step import NonFiniteLossError  # noqa: F401  (re-exported for callers)

log = logging.getLogger(__name__)


class MetricsSink:
    """Observer of per-day records (MLflow tracking implements it; training never imports mlflow)."""

    def log_day(self, record: DayRecord, step: int) -> None: ...


@dataclass
class DayLosses:
    """Sums of the day's training loss terms (for per-day means) and what the day trained on."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    rows: int = 0

    def add(self, terms: dict[str, float], rows: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.rows += rows

    def over_ranks(self, ctx: DistContext) -> tuple[dict[str, float], int]:
        """(`{term: mean over every rank's steps}` with the `loss/` prefix removed, rows trained
        on by every rank), in one collective."""
        keys = sorted(self.sums)
        *sums, steps, rows = ctx.all_sum([*(self.sums[k] for k in keys), float(self.steps), float(self.rows)])
        return {k.removeprefix("loss/"): v / max(steps, 1) for k, v in zip(keys, sums)}, int(rows)


class OnlineTrainer:
    """Trains the MatTA model (or the Student alone) and the production baseline on days in order.

    Files in `workdir`: `checkpoints/day=<D>.pt` (newest `keep_checkpoints`), `metrics.jsonl` (one
    `DayRecord` per finished day, rewritten atomically from the newest checkpoint's history).

    Args:
        spec: the feature spec.
        cfg: the run config.
        data_root: partition root.
        workdir: the run directory.
        ctx: rank / world size / device (default: one process).
        sinks: observers of each finished day's record (rank 0).
        force: redo days that are already finished.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        cfg: RunConfig,
        data_root: Path,
        workdir: Path,
        ctx: DistContext | None = None,
        sinks: tuple[MetricsSink, ...] = (),
        force: bool = False,
    ):
        self.spec, self.cfg = spec, cfg
        self.data_root, self.workdir = Path(data_root), Path(workdir)
        self.ctx = ctx or DistContext()
        self._id_warned: set[str] = set()  # days whose id-budget warning was logged
        self.sinks = sinks
        self.force = force
        self.ckpt_dir = self.workdir / "checkpoints"
        t = cfg.train
        torch.set_num_threads(t.threads or self.ctx.auto_threads())
        shard = dict(rank=self.ctx.rank, world_size=self.ctx.world_size)
        per_rank = t.per_rank_batch(self.ctx.world_size)  # train.batch_size is the global batch
        self.reader = DayReader(spec, self.data_root, per_rank, shuffle_buffer=t.shuffle_buffer, seed=t.seed, **shard)
        self.eval_reader = DayReader(spec, self.data_root, t.eval_batch_size, **shard)
        self.label = cfg.loss.label
        if self.label == "event" and spec.labels.event is None:
            raise UserError(f"loss.label=event but spec {spec.name!r} has no event label column")
        self.eval_label = cfg.eval_label
        if self.eval_label == "event" and spec.labels.event is None:
            raise UserError(f"train.eval_label=event but spec {spec.name!r} has no event label column")
        self._reset()

    def _reset(self) -> None:
        """Fresh models and optimizers (the state before the first day)."""
        if getattr(self, "engine", None) is not None:
            self.engine.close()
        self.engine: Engine = make_engine(self.spec, self.cfg, self.label, self.ctx)
        self.step = 0
        self.done_days: list[str] = []
        self.history: list[DayRecord] = []
        self.schema: dict | None = None  # {"day": first trained day, "columns": {column: kind}}
        self._synced = False  # in-memory state equals the newest checkpoint on disk

    @property
    def model(self) -> MatTAModel:
        return self.engine.model

    @property
    def baseline(self) -> MatTAModel | None:
        return self.engine.baseline

    # ---- state -------------------------------------------------------------------------------
    def _state(self) -> dict | None:
        """The checkpoint (a collective with sharded tables: rank 0 gets it, the others None)."""
        models = self.engine.state_dict()
        if models is None:
            return None
        return {
            "version": 2,
            "step": self.step,
            "done_days": list(self.done_days),
            "history": [r.model_dump() for r in self.history],
            "schema": self.schema,
            **models,
            "rng": rng_state(),
            "config": self.cfg.model_dump(mode="json"),
            "spec": self.spec.model_dump(mode="json"),
        }

    def _load(self, state: dict) -> None:
        self.engine.load_state_dict(state)
        self.step = state["step"]
        self.done_days = list(state["done_days"])
        self.history = [DayRecord.model_validate(r) for r in state["history"]]
        self.schema = state.get("schema")
        set_rng_state(state["rng"])

    def restore(self) -> None:
        """Load the newest checkpoint in the work directory (no-op when there is none)."""
        self._restore_before(None)
        self._synced = True

    def _restore_before(self, day: str | None) -> None:
        """Load the newest checkpoint (day=None) or the state just before `day` (for --force)."""
        found = load_newest(self.ckpt_dir, self._day_key)
        if found is None:
            return
        _, newest = found
        if day is None:
            self._load(newest)
            return
        done = newest["done_days"]
        before = done[: done.index(day)] if day in done else done
        if not before:
            self._reset()
            return
        prev = before[-1]
        ckpts = list_checkpoints(self.ckpt_dir)
        if prev not in ckpts:
            raise UserError(
                f"cannot redo {day}: the checkpoint of {prev} is no longer kept in {self.ckpt_dir} "
                f"(raise train.keep_checkpoints)"
            )
        self._load(newest if prev == found[0] else load_checkpoint(ckpts[prev]))

    def _day_key(self, day: str):
        return parse_day(day, self.spec.partition)

    def export(self) -> tuple[MatTAModel, MatTAModel | None] | None:
        """Plain (model, baseline) with the current weights on rank 0 (None on the others), for
        extraction and serving. Collective with sharded tables."""
        return self.engine.export()

    def close(self) -> None:
        self.engine.close()

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, days: list[str]) -> list[DayRecord]:
        """Train on `days` in chronological order; returns the records of the days run now."""
        days = sorted(days, key=self._day_key)
        if not self._synced:  # a backfill calling run() day by day reads each checkpoint once
            self._restore_before(None)
        out = []
        for day in days:
            if day in self.done_days and not self.force:
                log.info("day %s already finished; skipping (use --force to redo it)", day)
                continue
            if day in self.done_days or (self.done_days and self._day_key(day) < self._day_key(self.done_days[-1])):
                if not self.force:
                    raise UserError(
                        f"day {day} is before the last finished day {self.done_days[-1]}; online "
                        f"training goes forward in time (use --force to redo from {day})"
                    )
                self._restore_before(day)
            elif self.done_days:
                self._check_no_gap(day)
            out.append(self.run_day(day))
        return out

    def _check_no_gap(self, day: str) -> None:
        """Days in the data between the last finished day and `day` must not be skipped."""
        last = self._day_key(self.done_days[-1])
        skipped = [d for d in self.reader.days() if last < self._day_key(d) < self._day_key(day)]
        if skipped:
            raise UserError(
                f"day {day}: the data has {len(skipped)} day(s) after the last finished day "
                f"{self.done_days[-1]} that were not trained ({', '.join(skipped[:5])}"
                f"{', ...' if len(skipped) > 5 else ''}); online training goes through every day "
                f"in order: run them first (--days {skipped[0]}..{day})"
            )

    def preflight(self, day: str) -> None:
        """The checks of a new `day` before anything else reads it (the daily job's gate): no
        skipped day before it, and `check_day`."""
        if self.done_days and self._day_key(day) > self._day_key(self.done_days[-1]):
            self._check_no_gap(day)
        self.check_day(day)

    def check_day(self, day: str) -> dict[str, str]:
        """The checks before the day's data pass (DayDataError): rows, column types, the loss
        budget counted from the label columns alone and the id budget from the sparse columns
        alone (warned once per day, on rank 0)."""
        kinds = self.reader.column_kinds(day)
        check_drift(self.schema, kinds, day)
        check_has_rows(self.reader.num_rows(day), day, day_dir(self.data_root, self.spec, day))
        check_counts(self.reader.label_counts(day), day, self.cfg.data)
        warn = self.ctx.is_main and day not in self._id_warned
        check_ids(self.reader.id_counts(day), day, self.spec, self.cfg.data, warn=warn)
        self._id_warned.add(day)
        return kinds

    def run_day(self, day: str) -> DayRecord:
        self._synced = False  # until this day's checkpoint is written
        kinds = self.check_day(day)
        t0 = time.perf_counter()
        metrics = self.evaluate(day)
        t_eval = time.perf_counter() - t0
        counts = self.eval_reader.counts(day)  # the eval pass always reads the whole day
        if self.ctx.distributed:  # every rank's rows
            counts = sum(self.ctx.all_gather_object(counts), ReadCounts())
        t1 = time.perf_counter()
        losses = self.train_day(day)
        t_train = time.perf_counter() - t1
        loss_means, train_rows = losses.over_ranks(self.ctx)
        if self.schema is None:
            self.schema = {"day": day, "columns": kinds}
        record = DayRecord(
            day=day,
            day_index=len(self.done_days),
            **metrics,
            loss=loss_means,
            train_rows=train_rows,
            train_steps=losses.steps,
            reader=counts.as_dict(),
            seconds={"eval": round(t_eval, 3), "train": round(t_train, 3)},
        )
        self.done_days.append(day)
        self.history = [r for r in self.history if r.day != day] + [record]
        state = self._state()  # collective with sharded tables
        if self.ctx.is_main:
            save_checkpoint(checkpoint_path(self.ckpt_dir, day), state)
            self._prune()
            write_records(self.workdir / METRICS_FILE, self.history)
            for s in self.sinks:
                s.log_day(record, step=record.day_index)
        self.ctx.barrier()
        self._synced = True
        return record

    def _prune(self) -> None:
        ckpts = list_checkpoints(self.ckpt_dir)
        for d in sorted(ckpts, key=self._day_key)[: -self.cfg.train.keep_checkpoints]:
            ckpts[d].unlink(missing_ok=True)

    def _batches(self, reader: DayReader, day: str, desc: str) -> Iterator[Batch]:
        total = math.ceil(reader.num_rows(day) / reader.batch_size / self.ctx.world_size)
        show = self.cfg.train.progress and self.ctx.is_main
        for batch in tqdm(reader.iter_day(day), total=total, desc=f"{desc} {day}", disable=None if show else True, leave=False):
            yield batch.to(self.ctx.device, non_blocking=True)

    def evaluate(self, day: str) -> dict:
        """The evaluation fields of the day's record (none of the day seen in training yet)."""
        models = {"student": self.engine.model}
        if self.engine.baseline is not None:
            models["baseline"] = self.engine.baseline
        return evaluate_day(
            models,
            self._batches(self.eval_reader, day, "eval"),
            self.eval_label,
            has_event=self.spec.labels.event is not None,
            skip_empty=not self.engine.collective,
        )

    def train_day(self, day: str) -> DayLosses:
        """One pass over the day (at most `train.max_batches_per_day` batches)."""
        losses = DayLosses()
        batches = self._batches(self.reader, day, "train")
        cap = self.cfg.train.max_batches_per_day
        for res in self.engine.train(batches if cap is None else islice(batches, cap), self.step, day):
            self.step += 1
            losses.add(res.terms, res.rows)
        return losses
