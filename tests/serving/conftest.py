from tests.tracking.mlflow_store import mlflow_store  # noqa: F401  (fixture)
