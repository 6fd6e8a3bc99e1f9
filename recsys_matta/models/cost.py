"""Serving cost of an extracted Student: FLOPs per example and measured CPU latency.

    flops_per_example(model)            # torch.utils.flop_counter over one forward, / batch
    serving_latency_ms(pyfunc, frame)   # p50 wall time of the pyfunc's predict on `frame`

FLOPs count what `torch.utils.flop_counter` counts: the dense tower's matmuls (2 per
multiply-add), not the embedding lookups (memory-bound gathers) or elementwise work. Latency is
the whole serving path of `StudentPyfunc.predict_df` (raw rows -> encode -> model ->
probabilities), so it includes the encode; measured on the current process's CPU threads.
"""

from __future__ import annotations

import statistics
import time

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from recsys_matta.models.standalone import StandaloneModel


def flops_per_example(model: StandaloneModel, batch_size: int = 64) -> float:
    """Forward FLOPs per example of `model` (one bag of one id per sparse feature)."""
    f = len(model.feature_names)
    values = torch.zeros(batch_size * f, dtype=torch.int64)  # (B * F,)
    lengths = torch.ones(batch_size * f, dtype=torch.int64)  # (F * B,)
    dense = torch.zeros(batch_size, model.tower.num_dense)  # (B, D)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.eval()(values, lengths, dense)
    return counter.get_total_flops() / batch_size


def serving_latency_ms(pyfunc, frame: pd.DataFrame, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time (ms) of `pyfunc.predict_df(frame)` over `repeats` calls."""
    for _ in range(warmup):
        pyfunc.predict_df(frame)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pyfunc.predict_df(frame)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)
