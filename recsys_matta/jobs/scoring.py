"""Scoring models on whole days, streamed: trained modules on `Batch`es, registered pyfunc
models on raw rows (the serving path, so the gate scores exactly what would be served).

One path from files to rows: the day's files are `data.partitions.day_files` (the reader's
listing) and the rows kept are `data.encode.valid_labels`' (the reader's label rule); the
features go through `encode_table` inside the pyfunc, as in training."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_matta.data.batch import Batch
from recsys_matta.data.encode import needed_columns, valid_labels
from recsys_matta.data.partitions import day_dir, day_files
from recsys_matta.data.reader import DayReader
from recsys_matta.errors import DataError
from recsys_matta.metrics import ModelMetrics, model_metrics
from recsys_matta.specs import FeatureSpec


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


def raw_batches(
    spec: FeatureSpec, root: Path, day: str, chunk_rows: int = 65536
) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """(file, raw feature + label columns) of one day in chunks of <= chunk_rows rows, over
    the day's files as the training reader lists them (`data.partitions.day_files`)."""
    files = day_files(Path(root), spec.partition, day)
    if not files:
        raise DataError(f"{day_dir(Path(root), spec.partition, day)}: no parquet files for day {day}")
    cols = needed_columns(spec, labels=True)
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=chunk_rows, columns=cols):
            yield f, rb


def raw_frames(
    spec: FeatureSpec, root: Path, day: str, chunk_rows: int = 65536, limit: int | None = None
) -> Iterator[pd.DataFrame]:
    """The raw feature + label columns of one day as pandas DataFrames of <= chunk_rows rows."""
    left = limit
    for _, rb in raw_batches(spec, root, day, chunk_rows):
        df = rb.to_pandas()
        if left is not None:
            df = df.iloc[:left]
            left -= len(df)
        yield df
        if left is not None and left <= 0:
            return


def score_pyfunc(model, spec: FeatureSpec, root: Path, day: str, label: str) -> ModelMetrics:
    """Metrics of a registered pyfunc Student on the raw rows of `day` (the serving path: raw
    columns in). Rows are kept by the training reader's own rule (`encode.valid_labels`: every
    label column of the spec valid), so the gate scores exactly the rows evaluation scores."""
    features = needed_columns(spec, labels=False)
    probs, ys = [], []
    for path, rb in raw_batches(spec, root, day):
        labels, keep = valid_labels(spec, rb, str(path))
        y = labels["event"] if label == "event" else labels.get("teacher", labels.get("event"))
        if keep is not None:
            rb = rb.filter(pa.array(keep))
        if rb.num_rows == 0:
            continue
        df = rb.select(features).to_pandas()
        probs.append(np.asarray(model.predict(df), dtype=np.float64))
        ys.append(y.astype(np.float64))
    if not ys:
        return model_metrics(np.zeros(0), np.zeros(0))
    return model_metrics(np.concatenate(probs), np.concatenate(ys))
