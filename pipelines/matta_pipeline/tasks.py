"""The commands of the pipeline's tasks, built from the config (pure functions: no Airflow here,
so they are easy to read and to test).

Every stage is one call of the project's matta, which owns the logic (recsys_matta/jobs/daily.py
`run_stage`); the DAG only orders, waits, retries and reports:

    sensor    matta day-ready   --day D --require success|rows     exit 0 ready, 1 not yet
    gate      matta daily --stage gate     --day D                  the delayed champion gate
    train     matta daily --stage train    --day D                  (local, or torchrun in the image)
    register  matta daily --stage register --day D                  the Student -> candidate
    extract   matta daily --stage extract  --day D [--register-elastic K ...]
    report    matta daily --stage report   --day D                  reports/day=D.json
"""

from __future__ import annotations

import shlex

from matta_pipeline.config import PipelineConfig

DAY = "{{ data_interval_start | ds }}"  # the data interval's start: for @daily, the day that has just ended


def _env_prefix(env: dict[str, str]) -> list[str]:
    return ["env", *(f"{k}={v}" for k, v in sorted(env.items()))] if env else []


def local_env(cfg: PipelineConfig) -> dict[str, str]:
    env = dict(cfg.matta.env)
    if cfg.matta.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = cfg.matta.tracking_uri
    return env


def stage_args(cfg: PipelineConfig, stage: str, day: str = DAY) -> list[str]:
    """`daily --stage STAGE --day D ...` after the spec/data/workdir flags (shared by all runners)."""
    args = ["--day", day, "--stage", stage]
    if cfg.matta.config:
        args += ["--config", cfg.path(cfg.matta.config)]
    if stage == "extract":
        for k in cfg.matta.register_elastic:
            args += ["--register-elastic", str(k)]
    return args + list(cfg.matta.overrides)


def local_stage_command(cfg: PipelineConfig, stage: str, day: str = DAY) -> str:
    """The Bash command of a stage run by the project's matta on the Airflow worker."""
    m = cfg.matta
    argv = [
        *_env_prefix(local_env(cfg)),
        cfg.path(m.executable), "daily",
        "--spec", cfg.path(m.spec), "--data", cfg.path(m.data), "--workdir", cfg.path(m.workdir),
        *stage_args(cfg, stage, day),
    ]  # fmt: skip
    return _join(argv)


def sensor_command(cfg: PipelineConfig, day: str = DAY) -> str:
    m, s = cfg.matta, cfg.sensor
    argv = [
        *_env_prefix(dict(m.env)),
        cfg.path(m.executable), "day-ready",
        "--spec", cfg.path(m.spec), "--data", cfg.path(m.data), "--day", day,
        "--require", s.require, "--marker", s.marker,
    ]  # fmt: skip
    return _join(argv)


def container_train_args(cfg: PipelineConfig) -> list[str]:
    """Arguments of the GPU image's entry point (docker/entrypoint.sh), which runs
    `torchrun ... -m recsys_matta daily --spec $SPEC --data $DATA --day $DAY --workdir $WORKDIR "$@"`."""
    return ["--stage", "train", *cfg.matta.overrides]


def container_env(cfg: PipelineConfig, data: str, workdir: str, spec: str, extra: dict[str, str]) -> dict[str, str]:
    env = {"DAY": DAY, "DATA": data, "WORKDIR": workdir, "SPEC": spec, **extra}
    if cfg.matta.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = cfg.matta.tracking_uri
    return env


def _join(argv: list[str]) -> str:
    # the Jinja day template is quoted as '...'; Airflow renders it inside the quotes
    return " ".join(shlex.quote(a) for a in argv)
