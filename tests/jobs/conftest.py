import pytest


@pytest.fixture(autouse=True)
def _embedded_store(monkeypatch):
    """The run directory's own sqlite store; opening a tracker exports MLFLOW_TRACKING_URI, so
    it is removed again afterwards (no store leaks into later tests)."""
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
