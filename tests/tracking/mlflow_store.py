"""A real sqlite MLflow store per test, cheaply.

Creating a fresh MLflow sqlite database runs its migrations (~4 s); the first user creates one
template database and every store is a byte copy of it (milliseconds), with
`MLFLOW_TRACKING_URI` pointing there. Import the `mlflow_store` fixture into a conftest, or use
`fresh_store` for a module-scoped store.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_TEMPLATE: list[Path] = []


def template_db(factory: pytest.TempPathFactory) -> Path:
    if not _TEMPLATE:
        from mlflow import MlflowClient

        db = factory.mktemp("mlflow_template") / "mlflow.db"
        MlflowClient(f"sqlite:///{db}").search_experiments()  # creates the tables
        _TEMPLATE.append(db)
    return _TEMPLATE[0]


def reset_mlflow_globals() -> None:
    """End leftover fluent runs and forget a tracking URI set by the code under test."""
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # also unsets $MLFLOW_TRACKING_URI; the env is restored after


@contextmanager
def fresh_store(directory: Path, factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh sqlite store at `directory/mlflow.db`; `$MLFLOW_TRACKING_URI` points at it."""
    db = directory / "mlflow.db"
    shutil.copyfile(template_db(factory), db)
    uri = f"sqlite:///{db}"
    with pytest.MonkeyPatch.context() as mp:
        reset_mlflow_globals()
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for var in ("MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
            mp.delenv(var, raising=False)
        try:
            yield uri
        finally:
            reset_mlflow_globals()


@pytest.fixture
def mlflow_store(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_store(tmp_path, tmp_path_factory) as uri:
        yield uri
