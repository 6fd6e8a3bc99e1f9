"""The daily pipeline's settings: one YAML file (pipelines/config.yaml), validated here.

`load_config()` reads `$MATTA_PIPELINE_CONFIG` when set (tests point it at a temporary file),
else pipelines/config.yaml. Relative paths in the file are taken relative to the repository root
(the folder above pipelines/), so the checked-in file works from any working directory.

No secrets belong in the file: the MLflow server's credentials, a registry login or a kube config
come from the environment of the Airflow workers or from Airflow connections.

Runs in the Airflow environment: pydantic and PyYAML only, no torch, no recsys_matta.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_VAR = "MATTA_PIPELINE_CONFIG"
PIPELINES = Path(__file__).resolve().parents[1]
REPO = PIPELINES.parent
DEFAULT_PATH = PIPELINES / "config.yaml"

STAGES = ("gate", "train", "register", "extract", "report")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DagSettings(_Strict):
    dag_id: str = "matta_daily"
    start_date: date = date(2026, 1, 1)  # the first day the DAG runs for (its data interval start)
    end_date: Optional[date] = None
    schedule: str = "@daily"
    tags: list[str] = ["recsys", "matta"]


class MattaSettings(_Strict):
    """How the tasks call the project (the same arguments for every stage)."""

    executable: str = ".venv/bin/matta"  # the project's matta (its venv: torch, torchrec, mlflow)
    spec: str = "feature_specs/synthetic.yaml"
    data: str = "demo_run/data"
    workdir: str = "demo_run/pipeline"
    config: Optional[str] = None  # run config YAML
    overrides: list[str] = []  # key=value for every stage, e.g. preset=small
    tracking_uri: Optional[str] = None  # MLflow server; None: sqlite under the workdir
    register_elastic: list[int] = []  # wide-narrow-wide K registered by the extract stage
    env: dict[str, str] = {}  # extra environment of the local tasks (no secrets)

    @field_validator("overrides")
    @classmethod
    def _kv(cls, v: list[str]) -> list[str]:
        bad = [o for o in v if "=" not in o]
        if bad:
            raise ValueError(f"overrides must be key=value, got {bad}")
        return v


class SensorSettings(_Strict):
    require: Literal["success", "rows"] = "success"  # a marker file, or Parquet files with rows
    marker: str = "_SUCCESS"
    mode: Literal["poke", "reschedule"] = "reschedule"  # reschedule frees the worker slot between pokes
    poke_interval_s: float = Field(300, gt=0)
    timeout_s: float = Field(24 * 3600, gt=0)


class RetrySettings(_Strict):
    """Retries per stage (all stages are idempotent, so all are safe to retry); exit code 2 (bad
    input: a day failing its checks, a wrong flag) fails at once, since a retry cannot fix it."""

    retries: dict[str, int] = {"gate": 3, "train": 2, "register": 3, "extract": 3, "report": 3}
    retry_delay_s: float = Field(300, ge=0)
    max_retry_delay_s: float = Field(3600, ge=0)
    exponential_backoff: bool = True
    no_retry_exit_codes: list[int] = [2]

    @field_validator("retries")
    @classmethod
    def _stages(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = set(v) - set(STAGES) - {"sensor"}
        if unknown:
            raise ValueError(f"retries for unknown stages {sorted(unknown)}; stages: sensor, {', '.join(STAGES)}")
        return v


class Mount(_Strict):
    source: str  # host path (docker) / PVC claim name (kubernetes)
    target: str
    read_only: bool = False


class DockerSettings(_Strict):
    image: str = "recsys-matta-gpu:0.1.0"
    docker_url: str = "unix://var/run/docker.sock"
    gpus: Union[Literal["all"], int, list[str]] = "all"  # all, a count, or device ids ["0", "1"]
    network_mode: Optional[str] = None  # e.g. recsys-matta_default (the compose network, to reach mlflow)
    shm_size: str = "16g"
    mounts: list[Mount] = []
    data: str = "/data"  # the data root and workdir as the container sees them
    workdir: str = "/workdir"
    spec: str = "/opt/recsys-matta/feature_specs/synthetic.yaml"
    env: dict[str, str] = {}


class KubernetesSettings(_Strict):
    image: str = "recsys-matta-gpu:0.1.0"
    namespace: str = "matta"
    gpus: int = Field(1, ge=0)  # nvidia.com/gpu per pod
    service_account: Optional[str] = None
    node_selector: dict[str, str] = {}
    tolerations: list[dict] = []
    data_pvc: str = "matta-data"  # ReadWriteMany claims shared with the Airflow workers
    workdir_pvc: str = "matta-workdir"
    data: str = "/data"
    workdir: str = "/workdir"
    spec: str = "/opt/recsys-matta/feature_specs/synthetic.yaml"
    shm_size: str = "16Gi"
    startup_timeout_s: int = 600
    env: dict[str, str] = {}


class TrainSettings(_Strict):
    """Where the train stage runs: `local` (a Bash task with matta.executable: one machine, the
    tests), `docker` (the GPU image under torchrun with GPU device requests) or `kubernetes` (a pod
    with nvidia.com/gpu). The other stages always run locally: they are light (scoring a day,
    exporting, registering) and need the workdir and MLflow only."""

    runner: Literal["local", "docker", "kubernetes"] = "local"
    docker: DockerSettings = DockerSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()


class PipelineConfig(_Strict):
    dag: DagSettings = DagSettings()
    matta: MattaSettings = MattaSettings()
    sensor: SensorSettings = SensorSettings()
    retry: RetrySettings = RetrySettings()
    train: TrainSettings = TrainSettings()

    @model_validator(mode="after")
    def _server_for_containers(self) -> "PipelineConfig":
        if self.train.runner != "local" and not self.matta.tracking_uri:
            raise ValueError(
                f"train.runner={self.train.runner} needs matta.tracking_uri (an MLflow server): the "
                "container and the Airflow worker see the workdir under different paths, and the "
                "embedded sqlite store records absolute artifact paths"
            )
        return self

    def path(self, p: Optional[str]) -> Optional[str]:
        """A path of the file, absolute (relative ones are against the repository root)."""
        if p is None:
            return None
        q = Path(os.path.expanduser(p))
        return os.path.normpath(q if q.is_absolute() else REPO / q)  # no resolve(): keep a venv symlink


def config_path() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load_config(path: Optional[Path] = None) -> PipelineConfig:
    """Read and validate the pipeline config (`path`, else `$MATTA_PIPELINE_CONFIG`, else the
    checked-in pipelines/config.yaml)."""
    p = Path(path) if path is not None else config_path()
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: expected a mapping at the top level")
    return PipelineConfig.model_validate(raw)
