"""Progressive validation of one day: every model scored on all of the day before it trains on it
(docs/architecture.md section 7). Exact across ranks: predictions are gathered, never per-rank AUCs."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from recsys_matta.data.batch import Batch
from recsys_matta.metrics import PredictionBuffer, model_metrics, rel_improvement, weighted_auc


@torch.no_grad()
def evaluate_day(
    models: dict[str, nn.Module],
    batches: Iterable[Batch],
    eval_label: str,
    has_event: bool,
    skip_empty: bool = True,
) -> dict:
    """Metrics of each model over `batches` (this rank's rows of the day; every rank's are
    gathered).

    Args:
        models: `{"student": matta_model, "baseline": baseline}` (`MatTAModel`s); the MatTA
            model's second output is scored as `ta` unless it is Student-only.
        batches: the day's batches on the models' device.
        eval_label: `teacher` or `event`.
        has_event: the data has an event label (also report `event_auc_loss`).
        skip_empty: skip size-0 batches (False with sharded tables: every rank makes every call).
    Returns:
        The evaluation fields of a `DayRecord`: `eval_label`, `eval_rows`, `student`, `ta`,
        `baseline` (`ModelMetrics`), `student_rel_improvement`, `ta_rel_improvement`.
    """
    for m in models.values():
        m.eval()
    main, baseline = models["student"], models.get("baseline")
    has_ta = not main.student_only
    names = ["student"] + (["ta"] if has_ta else []) + (["baseline"] if baseline is not None else [])
    buf = PredictionBuffer(names + ["label"] + (["event"] if has_event else []))
    for batch in batches:
        if batch.size == 0 and skip_empty:
            continue  # every row had an invalid label (the EBC rejects stride 0)
        logit_s, logit_ta = main(batch)  # (B,), (B,) or None
        cols = {"student": torch.sigmoid(logit_s), "label": batch.label(eval_label)}
        if has_ta:
            cols["ta"] = torch.sigmoid(logit_ta)
        if baseline is not None:
            cols["baseline"] = torch.sigmoid(baseline(batch)[0])
        if has_event:
            cols["event"] = batch.event
        buf.add(**cols)
    preds = buf.gather()
    y = preds["label"]
    out: dict = {"eval_label": eval_label, "eval_rows": int(len(y))}
    for n in names:
        m = model_metrics(preds[n], y)
        if has_event and eval_label != "event":
            m.event_auc_loss = 1.0 - weighted_auc(preds[n], preds["event"])
        out[n] = m
    if "baseline" in out:
        for n in ("student", "ta"):
            if n in out:
                out[f"{n}_rel_improvement"] = rel_improvement(out[n].auc_loss, out["baseline"].auc_loss)
    return out
