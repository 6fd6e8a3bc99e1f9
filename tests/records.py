"""Hand-made `DayRecord`s for tests that read metrics.jsonl (study, plots, runner)."""

from recsys_matta.metrics import ModelMetrics
from recsys_matta.train.records import DayRecord


def metrics(auc_loss: float, log_loss: float = 0.5, rows: int = 10) -> ModelMetrics:
    return ModelMetrics(auc_loss=auc_loss, log_loss=log_loss, calibration=1.0, rows=rows)


def day_record(day: str, index: int = 0, **fields) -> DayRecord:
    """A record of `day`; `student` defaults to AucLoss 0.3; other fields as given."""
    base = dict(
        day=day, day_index=index, eval_label="teacher", eval_rows=10, student=metrics(0.3), loss={},
        train_rows=10, train_steps=1, reader={}, seconds={},
    )  # fmt: skip
    return DayRecord(**{**base, **fields})
