"""AucLoss = 1 - AUROC and friends, exact over a whole day (docs/architecture.md section 7).

With soft labels y in [0, 1] the AUROC is the weighted AUC in which each example counts as a
positive with weight y and as a negative with weight 1 - y; on 0/1 labels it is the ordinary
AUROC. Computed by scikit-learn's `roc_auc_score` with sample weights (exact, tie-aware).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


def weighted_auc(pred: np.ndarray, y: np.ndarray) -> float:
    """AUROC of scores `pred` (N,) against labels `y` (N,) in [0, 1] (soft labels allowed).

    NaN when the labels carry no positive or no negative weight, or a score is not finite.
    """
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    pos, neg = float(y.sum()), float((1.0 - y).sum())
    if pos <= 0.0 or neg <= 0.0 or not np.isfinite(pred).all():
        return math.nan
    if np.all((y == 0.0) | (y == 1.0)):
        return float(roc_auc_score(y, pred))
    # each example once as a positive (weight y) and once as a negative (weight 1 - y)
    labels = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    scores = np.concatenate([pred, pred])
    weights = np.concatenate([y, 1.0 - y])
    keep = weights > 0
    return float(roc_auc_score(labels[keep], scores[keep], sample_weight=weights[keep]))


def log_loss(prob: np.ndarray, y: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities against labels in [0, 1]."""
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


@dataclass
class ModelMetrics:
    """One model's metrics on one day.

    Args:
        auc_loss: 1 - AUROC against the evaluation label (soft labels weighted).
        log_loss: mean BCE against the evaluation label.
        calibration: mean prediction / mean label.
        rows: rows scored.
        event_auc_loss: 1 - AUROC against the event label, when the evaluation label is the
            Teacher's and the data has events (else None).
    """

    auc_loss: float
    log_loss: float
    calibration: float
    rows: int
    event_auc_loss: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def model_metrics(prob: np.ndarray, y: np.ndarray) -> ModelMetrics:
    """prob, y: (N,) probabilities and labels of one day."""
    if len(y) == 0:
        return ModelMetrics(math.nan, math.nan, math.nan, 0)
    mean_y = float(np.mean(y))
    return ModelMetrics(
        auc_loss=1.0 - weighted_auc(prob, y),
        log_loss=log_loss(prob, y),
        calibration=float(np.mean(prob)) / mean_y if mean_y > 0 else math.nan,
        rows=int(len(y)),
    )


def rel_improvement(auc_loss_model: float, auc_loss_baseline: float) -> float:
    """(AucLoss_model - AucLoss_baseline) / AucLoss_baseline; negative is better."""
    if not (auc_loss_baseline > 0):
        return math.nan
    return (auc_loss_model - auc_loss_baseline) / auc_loss_baseline
