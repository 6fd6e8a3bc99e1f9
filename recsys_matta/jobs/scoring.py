"""Scoring models on whole days, streamed: trained modules on `Batch`es, registered pyfunc
models on raw rows (the serving path, so the gate scores exactly what would be served)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from recsys_matta.data.batch import Batch
from recsys_matta.data.encode import needed_columns
from recsys_matta.data.partitions import day_dir
from recsys_matta.data.reader import DayReader
from recsys_matta.errors import DataError
from recsys_matta.metrics import ModelMetrics, model_metrics
from recsys_matta.specs import FeatureSpec


def label_of(spec: FeatureSpec, label: str) -> str:
    """Column name of label `teacher` / `event` (falls back to the one the spec has)."""
    col = spec.labels.teacher if label == "teacher" else spec.labels.event
    return col or spec.label_column


@torch.no_grad()
def score_batches(
    fns: dict[str, Callable[[Batch], torch.Tensor]], reader: DayReader, days: list[str], label: str
) -> dict[str, ModelMetrics]:
    """Metrics of each `fn: Batch -> logits (B,)` over all rows of `days` (one reader pass)."""
    preds: dict[str, list[torch.Tensor]] = {n: [] for n in fns}
    ys: list[torch.Tensor] = []
    for day in days:
        for batch in reader.iter_day(day):
            if batch.size == 0:
                continue
            ys.append(batch.label(label))
            for n, fn in fns.items():
                preds[n].append(torch.sigmoid(fn(batch)).float())
    y = torch.cat(ys).numpy() if ys else np.zeros(0, np.float32)
    return {n: model_metrics(torch.cat(p).numpy() if p else np.zeros(0), y) for n, p in preds.items()}


def raw_frames(
    spec: FeatureSpec, root: Path, day: str, chunk_rows: int = 65536, limit: int | None = None
) -> Iterator[pd.DataFrame]:
    """The raw feature + label columns of one day as pandas DataFrames of <= chunk_rows rows."""
    folder = day_dir(Path(root), spec.partition, day)
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise DataError(f"{folder}: no parquet files for day {day}")
    cols = needed_columns(spec, labels=True)
    left = limit
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=chunk_rows, columns=cols):
            df = rb.to_pandas()
            if left is not None:
                df = df.iloc[:left]
                left -= len(df)
            yield df
            if left is not None and left <= 0:
                return


def score_pyfunc(model, spec: FeatureSpec, root: Path, day: str, label: str) -> ModelMetrics:
    """Metrics of a registered pyfunc Student on the raw rows of `day`. Rows whose label is
    null or outside [0, 1] are left out, as the training reader drops them."""
    col = label_of(spec, label)
    features = needed_columns(spec, labels=False)
    probs, ys = [], []
    for df in raw_frames(spec, root, day):
        y = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        keep = np.isfinite(y) & (y >= 0) & (y <= 1)
        if not keep.any():
            continue
        probs.append(np.asarray(model.predict(df.loc[keep, features].reset_index(drop=True)), dtype=np.float64))
        ys.append(y[keep])
    if not ys:
        return model_metrics(np.zeros(0), np.zeros(0))
    return model_metrics(np.concatenate(probs), np.concatenate(ys))
