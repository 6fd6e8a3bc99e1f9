"""The online (daily) MatTA loop (DESIGN.md section 5): for each day in order, evaluate Student,
TA and baseline on the day before training on it (progressive validation), train one pass, then
checkpoint atomically and record the day as done. Setup -> run -> close, as a recipe.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recsys_matta.data.batch import Batch
from recsys_matta.data.encode import ReadCounts
from recsys_matta.data.reader import DayReader
from recsys_matta.errors import UserError
from recsys_matta.metrics import PredictionBuffer, model_metrics, rel_improvement, weighted_auc
from recsys_matta.models import MatTAModel
from recsys_matta.specs import FeatureSpec
from recsys_matta.specs.config import RunConfig
from recsys_matta.train.checkpoint import (
    atomic_write_text,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from recsys_matta.train.dist import DistContext
from recsys_matta.train.loss import matta_loss
from recsys_matta.train.optim import ModelOptimizer

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the day is abandoned and the last good checkpoint kept."""


class MetricsSink:
    """Observer of per-day records (MLflow tracking implements it; training never imports mlflow)."""

    def log_day(self, record: dict, step: int) -> None: ...


@dataclass
class DayResult:
    record: dict
    skipped: bool = False


@dataclass
class _Running:
    """Sums of the day's training loss terms (for per-day means)."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    rows: int = 0

    def add(self, terms: dict[str, float], rows: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.rows += rows

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}


class OnlineTrainer:
    """Trains the MatTA model (or the Student alone) and the production baseline on days in order.

    Files in `workdir`: `checkpoints/day=<D>.pt` (newest `keep_checkpoints`), `metrics.jsonl` (one
    record per finished day, rewritten atomically from the newest checkpoint's history).
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
        self.sinks = sinks
        self.force = force
        self.ckpt_dir = self.workdir / "checkpoints"
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        shard = dict(rank=self.ctx.rank, world_size=self.ctx.world_size)
        self.reader = DayReader(
            spec, self.data_root, t.batch_size, shuffle_buffer=t.shuffle_buffer, seed=t.seed, **shard
        )
        self.eval_reader = DayReader(spec, self.data_root, t.eval_batch_size, **shard)
        self.label = cfg.loss.label
        if self.label == "event" and spec.labels.event is None:
            raise UserError(f"loss.label=event but spec {spec.name!r} has no event label column")
        self.eval_label = self.label if t.eval_label == "auto" else t.eval_label
        if self.eval_label == "event" and spec.labels.event is None:
            raise UserError(f"train.eval_label=event but spec {spec.name!r} has no event label column")
        self._build()

    # ---- setup -------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, dev = self.cfg, self.ctx.device
        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed)
        self.model = MatTAModel(self.spec, cfg.model, student_only=cfg.student_only).to(dev)
        self.opt = ModelOptimizer(self.model, cfg.optim.dense, cfg.optim.lr, cfg.optim)
        self.baseline: MatTAModel | None = None
        self.baseline_opt: ModelOptimizer | None = None
        self.baseline_frozen = False
        if cfg.baseline.enabled:
            torch.manual_seed(cfg.train.seed + 1)
            self.baseline = MatTAModel(self.spec, cfg.model, student_only=True).to(dev)
            if cfg.baseline.checkpoint:
                state = load_checkpoint(Path(cfg.baseline.checkpoint))
                if state.get("baseline") is None:
                    raise UserError(f"{cfg.baseline.checkpoint}: checkpoint holds no baseline model")
                self.baseline.load_state_dict(state["baseline"])
                self.baseline_frozen = True
            else:
                self.baseline_opt = ModelOptimizer(
                    self.baseline, cfg.baseline.optimizer, cfg.baseline.lr, cfg.optim
                )
        # issue 7: under torchrun (or dist.sharded=always) the tables go into TorchRec DMP,
        # initialised from the plain weights above; a frozen baseline stays plain.
        self.sharded = None
        if cfg.dist.sharded == "always" or self.ctx.distributed:
            from recsys_matta.train.sharding import ShardedModels

            trained_baseline = None if self.baseline_frozen else self.baseline
            self.sharded = ShardedModels(self.model, trained_baseline, cfg, self.label, self.ctx)
            self.opt, self.baseline_opt = self.sharded.opt, self.sharded.baseline_opt
        self.step = 0
        self.done_days: list[str] = []
        self.history: list[dict] = []
        self._synced = False  # in-memory state equals the newest checkpoint on disk

    def _state(self) -> dict | None:
        """The checkpoint. With sharded tables a collective that returns it on rank 0 only (the
        same plain format, loadable with any world size)."""
        if self.sharded is not None:
            models = self.sharded.gather_state()
            if models is None:
                return None
            if self.baseline_frozen:
                models["baseline"] = self.baseline.state_dict()
        else:
            models = {
                "model": self.model.state_dict(),
                "optim": self.opt.state_dict(),
                "baseline": None if self.baseline is None else self.baseline.state_dict(),
                "baseline_optim": None if self.baseline_opt is None else self.baseline_opt.state_dict(),
            }
        return {
            "version": 1,
            "step": self.step,
            "done_days": list(self.done_days),
            "history": list(self.history),
            **models,
            "rng": rng_state(),
            "config": self.cfg.model_dump(mode="json"),
            "spec": self.spec.model_dump(mode="json"),
        }

    def _load(self, state: dict) -> None:
        if self.sharded is not None:
            self.sharded.load_state(state)
        else:
            self._load_plain(state)
        self.step = state["step"]
        self.done_days = list(state["done_days"])
        self.history = list(state["history"])
        set_rng_state(state["rng"])

    def _load_plain(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        if self.baseline is not None and state.get("baseline") is not None and not self.baseline_frozen:
            self.baseline.load_state_dict(state["baseline"])
            if self.baseline_opt is not None and state.get("baseline_optim") is not None:
                self.baseline_opt.load_state_dict(state["baseline_optim"])

    def restore(self) -> None:
        """Load the newest checkpoint in the work directory (no-op when there is none)."""
        self._restore_before(None)
        self._synced = True

    def _restore_before(self, day: str | None) -> None:
        """Load the newest checkpoint (day=None) or the state just before `day` (for --force)."""
        ckpts = list_checkpoints(self.ckpt_dir)
        if not ckpts:
            return
        newest = load_checkpoint(ckpts[max(ckpts, key=self._day_key)])
        if day is None:
            self._load(newest)
            return
        done = newest["done_days"]
        before = done[: done.index(day)] if day in done else done
        if not before:
            self._build()
            return
        prev = before[-1]
        if prev not in ckpts:
            raise UserError(
                f"cannot redo {day}: the checkpoint of {prev} is no longer kept in {self.ckpt_dir} "
                f"(raise train.keep_checkpoints)"
            )
        self._load(load_checkpoint(ckpts[prev]))

    def _day_key(self, day: str):
        from recsys_matta.data.partitions import parse_day

        return parse_day(day, self.spec.partition)

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, days: list[str]) -> list[dict]:
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
            out.append(self.run_day(day))
        return out

    def run_day(self, day: str) -> dict:
        self._synced = False  # until this day's checkpoint is written
        t0 = time.perf_counter()
        metrics = self.evaluate(day)
        t_eval = time.perf_counter() - t0
        losses = self.train_day(day)
        t_train = time.perf_counter() - t0 - t_eval
        counts = self.eval_reader.counts(day)  # the eval pass always reads the whole day
        if self.ctx.distributed:  # every rank's rows
            counts = sum(self.ctx.all_gather_object(counts), ReadCounts())
        counts = counts.as_dict()
        record = {
            "day": day,
            "day_index": len(self.done_days),
            **metrics,
            "loss": {k.removeprefix("loss/"): v for k, v in losses.means().items()},
            "train_rows": int(self.ctx.all_sum([float(losses.rows)])[0]),
            "train_steps": losses.steps,
            "reader": counts,
            "seconds": {"eval": round(t_eval, 3), "train": round(t_train, 3)},
        }
        self.done_days.append(day)
        self.history = [r for r in self.history if r["day"] != day] + [record]
        state = self._state()  # collective with sharded tables
        if self.ctx.is_main:
            save_checkpoint(checkpoint_path(self.ckpt_dir, day), state)
            self._prune()
            self._write_metrics()
            for s in self.sinks:
                s.log_day(record, step=record["day_index"])
        self.ctx.barrier()
        self._synced = True
        return record

    def _prune(self) -> None:
        ckpts = list_checkpoints(self.ckpt_dir)
        for d in sorted(ckpts, key=self._day_key)[: -self.cfg.train.keep_checkpoints]:
            ckpts[d].unlink(missing_ok=True)

    def _write_metrics(self) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.history)
        atomic_write_text(self.workdir / "metrics.jsonl", text)

    def plain_models(self) -> tuple[MatTAModel, MatTAModel | None]:
        """Unsharded (model, baseline) holding the current weights, for extraction and export.
        With sharded tables: fresh plain copies (a collective: every rank must call it)."""
        if self.sharded is not None:
            model, baseline = self.sharded.plain_models()
            return model, self.baseline if self.baseline_frozen else baseline
        return self.model, self.baseline

    # ---- evaluation (progressive validation) -------------------------------------------------
    def _batches(self, reader: DayReader, day: str, desc: str) -> Iterator[Batch]:
        total = math.ceil(reader.num_rows(day) / reader.batch_size / self.ctx.world_size)
        show = self.cfg.train.progress and self.ctx.is_main
        for batch in tqdm(reader.iter_day(day), total=total, desc=f"{desc} {day}", disable=None if show else True, leave=False):
            yield batch.to(self.ctx.device, non_blocking=True)

    @torch.no_grad()
    def evaluate(self, day: str) -> dict:
        """Metrics of every model on all of `day` (none of it seen in training yet)."""
        self.model.eval()
        has_ta = not self.cfg.student_only
        names = ["student"] + (["ta"] if has_ta else []) + (["baseline"] if self.baseline else [])
        has_event = self.spec.labels.event is not None
        buf = PredictionBuffer(names + ["label"] + (["event"] if has_event else []))
        if self.baseline is not None:
            self.baseline.eval()
        for batch in self._batches(self.eval_reader, day, "eval"):
            if batch.size == 0 and self.sharded is None:
                continue  # every row of the batch had an invalid label (the EBC rejects stride 0)
            logit_s, logit_ta = self.model(batch)
            cols = {"student": torch.sigmoid(logit_s), "label": batch.label(self.eval_label)}
            if has_ta:
                cols["ta"] = torch.sigmoid(logit_ta)
            if self.baseline is not None:
                cols["baseline"] = torch.sigmoid(self.baseline(batch)[0])
            if has_event:
                cols["event"] = batch.event
            buf.add(**cols)
        preds = buf.gather()
        y = preds["label"]
        out: dict = {"eval_label": self.eval_label, "eval_rows": int(len(y))}
        for n in names:
            out[n] = model_metrics(preds[n], y).as_dict()
            if has_event and self.eval_label != "event":
                out[n]["event_auc_loss"] = 1.0 - weighted_auc(preds[n], preds["event"])
        if "baseline" in out:
            for n in ("student", "ta"):
                if n in out:
                    out[f"{n}_rel_improvement"] = rel_improvement(out[n]["auc_loss"], out["baseline"]["auc_loss"])
        return out

    # ---- training ----------------------------------------------------------------------------
    def train_day(self, day: str) -> _Running:
        self.model.train()
        if self.baseline is not None:
            self.baseline.train()
        run = _Running()
        cap = self.cfg.train.max_batches_per_day
        if self.sharded is not None:  # issue 7: DMP steps (TrainPipelineSparseDist by default)
            batches = self._batches(self.reader, day, "train")
            for res in self.sharded.train(batches if cap is None else islice(batches, cap), self.step):
                bad = {k: v for k, v in res.terms.items() if not math.isfinite(v)}
                if bad:
                    raise NonFiniteLossError(
                        f"non-finite loss on day {day} at step {self.step} ({res.terms}); the day "
                        f"is abandoned and the last good checkpoint kept"
                    )
                self.step += 1
                run.add(res.terms, res.rows)
            return run
        for i, batch in enumerate(self._batches(self.reader, day, "train")):
            if cap is not None and i >= cap:
                break
            if batch.size == 0:
                continue  # every row of the batch had an invalid label (the EBC rejects stride 0)
            terms = self.train_step(batch, day)
            run.add(terms, batch.size)
        return run

    def train_step(self, batch: Batch, day: str = "?") -> dict[str, float]:
        y = batch.label(self.label)
        logit_s, logit_ta = self.model(batch)
        terms = matta_loss(logit_s, logit_ta, y, self.step, self.cfg.loss)
        if not torch.isfinite(terms.total):
            raise NonFiniteLossError(
                f"non-finite loss {terms.total.item()} on day {day} at step {self.step} "
                f"({terms.as_floats()}); the day is abandoned and the last good checkpoint kept"
            )
        self.opt.zero_grad()
        terms.total.backward()
        self.opt.step()
        out = terms.as_floats()
        if self.baseline is not None and self.baseline_opt is not None:
            logit_b, _ = self.baseline(batch)
            loss_b = F.binary_cross_entropy_with_logits(logit_b, y)
            if not torch.isfinite(loss_b):
                raise NonFiniteLossError(f"non-finite baseline loss on day {day} at step {self.step}")
            self.baseline_opt.zero_grad()
            loss_b.backward()
            self.baseline_opt.step()
            out["loss/baseline"] = float(loss_b.detach())
        self.step += 1
        return out
