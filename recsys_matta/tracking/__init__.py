"""Experiment tracking (MLflow behind a small interface), the model registry gate, and plots.

Importing this package does not import mlflow or matplotlib (they load on first use).
"""

from recsys_matta.tracking.params import day_metrics, flatten_metrics, flatten_params
from recsys_matta.tracking.registry import (
    CANDIDATE,
    CHAMPION,
    DEFAULT_MODEL_NAME,
    GateDecision,
    champion_version,
    gate,
    load_champion,
    register,
    version_tags,
)
from recsys_matta.tracking.tracker import (
    MlflowTracker,
    NullTracker,
    Tracker,
    configure_mlflow,
    open_tracker,
)

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "DEFAULT_MODEL_NAME",
    "GateDecision",
    "MlflowTracker",
    "NullTracker",
    "Tracker",
    "champion_version",
    "configure_mlflow",
    "day_metrics",
    "flatten_metrics",
    "flatten_params",
    "gate",
    "load_champion",
    "open_tracker",
    "register",
    "version_tags",
]
