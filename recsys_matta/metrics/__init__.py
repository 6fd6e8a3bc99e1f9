"""AucLoss and friends."""

from recsys_matta.metrics.auc import ModelMetrics, log_loss, model_metrics, rel_improvement, weighted_auc
from recsys_matta.metrics.stream import PredictionBuffer

__all__ = ["ModelMetrics", "PredictionBuffer", "log_loss", "model_metrics", "rel_improvement", "weighted_auc"]
