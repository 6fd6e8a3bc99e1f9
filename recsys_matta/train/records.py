"""The per-day record of the online loop (`DayRecord`) and its one reader / writer of
`metrics.jsonl` (one JSON object per finished day, chronological).

Every consumer (the console table, MLflow metrics, plots, `matta compare`, the registry tags, the
study) reads records through `read_records` and the typed fields, never by parsing the JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from recsys_matta.errors import DataError
from recsys_matta.metrics import ModelMetrics
from recsys_matta.train.checkpoint import atomic_write_text

METRICS_FILE = "metrics.jsonl"
MODELS = ("student", "ta", "baseline")


class DayRecord(BaseModel):
    """What one finished day produced.

    Args:
        day: the partition.
        day_index: position of the day in the run (0 = first trained day; the MLflow step).
        eval_label: label the metrics are against (`teacher` or `event`).
        eval_rows: rows scored in the progressive evaluation (all ranks).
        student: the Student's metrics on the day, measured before training on it.
        ta: the TA's (None for a Student-only run).
        baseline: the production baseline's (None without a baseline).
        student_rel_improvement: (Student - baseline) / baseline AucLoss (negative is better).
        ta_rel_improvement: the same for the TA.
        loss: mean training loss terms over the day's steps (`total`, `student`, `ta`,
            `distill`, `distill_ramp`, `baseline`).
        train_rows: rows trained on (all ranks).
        train_steps: optimizer steps on the day.
        reader: the reader's counts for the day (rows read / kept / dropped, nulls, OOV, fills).
        seconds: wall seconds of `eval` and `train`.
    """

    model_config = ConfigDict(extra="forbid")

    day: str
    day_index: int
    eval_label: str
    eval_rows: int
    student: ModelMetrics
    ta: ModelMetrics | None = None
    baseline: ModelMetrics | None = None
    student_rel_improvement: float | None = None
    ta_rel_improvement: float | None = None
    loss: dict[str, float]
    train_rows: int
    train_steps: int
    reader: dict[str, int]
    seconds: dict[str, float]

    def metrics_of(self, model: str) -> ModelMetrics | None:
        """`student`, `ta` or `baseline`."""
        if model not in MODELS:
            raise KeyError(f"unknown model {model!r}; expected one of {MODELS}")
        return getattr(self, model)

    def auc_loss(self, model: str) -> float:
        """AucLoss of `model` on the day (NaN when the run has no such model)."""
        m = self.metrics_of(model)
        return math.nan if m is None else m.auc_loss

    def rel_improvement(self, model: str) -> float | None:
        return {"student": self.student_rel_improvement, "ta": self.ta_rel_improvement}.get(model)

    def to_json(self) -> str:
        """One line (NaN written as the JSON extension `NaN`, as Python's json does)."""
        return json.dumps(self.model_dump(exclude_none=True), sort_keys=True)


def read_records(path: str | Path) -> list[DayRecord]:
    """The records of a `metrics.jsonl` file ([] when it does not exist).

    Raises:
        DataError: a line is not JSON or not a valid record (names the file and the line).
    """
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.is_file():
        return []
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(DayRecord.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as e:
            raise DataError(f"{p}:{i}: not a valid day record: {e}") from None
    return out


def write_records(path: str | Path, records: list[DayRecord]) -> None:
    """Rewrite `metrics.jsonl` atomically (a crash leaves the old file or the new one)."""
    atomic_write_text(Path(path), "".join(r.to_json() + "\n" for r in records))
