"""Experiment tracking behind a small interface: training code calls a `Tracker`, never mlflow.

* `open_tracker(workdir, experiment, run_name)` opens ONE MLflow run for this invocation and
  returns an `MlflowTracker`; with `enabled=False` (ranks != 0, tests) a `NullTracker`.
* Store: `tracking_uri` if given, else `$MLFLOW_TRACKING_URI` (e.g. a tracking server), else the
  embedded `sqlite:///<workdir>/mlflow.db`. For a sqlite store a newly created experiment keeps
  its artifacts in `mlartifacts/` beside the database file (`<workdir>/mlartifacts`); with a
  server, the server decides.
* Opening a tracker points this process's MLflow at that store (`mlflow.set_tracking_uri`, which
  also sets `$MLFLOW_TRACKING_URI` for child processes), so the registry helpers and
  `models:/...` URIs resolve against the same store. `configure_mlflow` does only that.
* Runs are driven through `MlflowClient` with an explicit run id, not MLflow's global "active
  run" stack: a run that is already active (a notebook's, a caller's) is left alone and becomes
  the new run's parent (tag `mlflow.parentRunId`); a second tracker opened while the first is
  open is an independent sibling run. `close()` ends only this tracker's run.
* Used as a context manager the run ends FINISHED, or FAILED when the block raises (KILLED on
  Ctrl-C); the exception propagates. When the server cannot be told (it is down), the run's id
  and status are kept in `<workdir>/.mlflow_unfinished.json` and the next tracker opened on that
  work directory ends the run with that status, so no run stays RUNNING forever.
* A tracking server that does not answer fails within a bounded time (`set_http_limits`, from
  the run config's `tracking` section) instead of MLflow's minutes of retries.

mlflow is imported lazily (1.7-3.7 s): importing this module costs nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, runtime_checkable

from recsys_matta.tracking.params import clean_key, flatten_metrics, flatten_params, truncate

log = logging.getLogger(__name__)

DB_FILE = "mlflow.db"
UNFINISHED_FILE = ".mlflow_unfinished.json"
_HTTP_ENV: set[str] = set()  # the MLFLOW_HTTP_* variables this process set (not the user)
ARTIFACT_DIR = "mlartifacts"
TAG_VALUE_LIMIT = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH
_PARAMS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH
_METRICS_PER_BATCH = 1000  # MAX_METRICS_PER_BATCH

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]


@runtime_checkable
class Tracker(Protocol):
    """What training / pipeline code may call. Keys are flattened (see `tracking.params`)."""

    @property
    def run_id(self) -> str | None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_dict(self, data: Any, artifact_file: str) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def close(self, status: RunStatus = "FINISHED") -> None: ...


class _ContextTracker:
    """`with tracker:` closes FINISHED, FAILED on an exception, KILLED on KeyboardInterrupt."""

    def close(self, status: RunStatus = "FINISHED") -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("KILLED")
        else:
            self.close("FAILED")


class NullTracker(_ContextTracker):
    """Accepts every call and records nothing (ranks != 0, tests, `--no-tracking`)."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_dict(self, data: Any, artifact_file: str) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def close(self, status: RunStatus = "FINISHED") -> None:
        pass


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class MlflowTracker(_ContextTracker):
    """One MLflow run, addressed by id through an `MlflowClient` (see the module docstring).

    Args:
        client: an `mlflow.MlflowClient` for the store.
        run_id: the run this tracker writes to (already created, status RUNNING).
        experiment_id: the run's experiment.
        tracking_uri: the store's URI.
    """

    def __init__(
        self, client: Any, run_id: str, experiment_id: str, tracking_uri: str, unfinished: Path | None = None
    ) -> None:
        self.client = client
        self._run_id = run_id
        self.experiment_id = experiment_id
        self.tracking_uri = tracking_uri
        self.unfinished = unfinished  # where to remember the status when the server is down
        self.status: str = "RUNNING"

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self._run_id).info.artifact_uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) config as flattened params. MLflow params are write-once: logging a
        key again with a different value raises."""
        from mlflow.entities import Param

        flat = [Param(k, v) for k, v in flatten_params(params).items()]
        for chunk in _chunks(flat, _PARAMS_PER_BATCH):
            self.client.log_batch(self._run_id, params=chunk, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log (nested) numeric metrics at `step` (the day index for per-day metrics)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        flat = [Metric(k, v, now, int(step or 0)) for k, v in flatten_metrics(metrics).items()]
        for chunk in _chunks(flat, _METRICS_PER_BATCH):
            self.client.log_batch(self._run_id, metrics=chunk, synchronous=True)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a directory's contents, under `artifact_path` of the run."""
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self._run_id, str(p), artifact_path)
        elif p.is_file():
            self.client.log_artifact(self._run_id, str(p), artifact_path)
        else:
            raise FileNotFoundError(f"artifact {p}: no such file or directory")

    def log_dict(self, data: Any, artifact_file: str) -> None:
        """Write `data` as JSON (`.json`) or YAML (`.yaml`/`.yml`) to `artifact_file`."""
        self.client.log_dict(self._run_id, json.loads(json.dumps(data, default=str)), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self._run_id, text, artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        flat = [RunTag(clean_key(k), truncate(str(v), TAG_VALUE_LIMIT)) for k, v in tags.items()]
        for chunk in _chunks(flat, _PARAMS_PER_BATCH):
            self.client.log_batch(self._run_id, tags=chunk, synchronous=True)

    def close(self, status: RunStatus = "FINISHED") -> None:
        """End the run with `status`; later calls do nothing."""
        if self.status != "RUNNING":
            return
        self.status = status
        try:
            self.client.set_terminated(self._run_id, status)
        except Exception as e:  # noqa: BLE001 - the server is down: end the run next time
            if self.unfinished is None:
                raise
            _remember_unfinished(self.unfinished, self.tracking_uri, self._run_id, status)
            log.warning(
                "mlflow run %s could not be marked %s at %s (%s); the next run on this work "
                "directory marks it", self._run_id, status, self.tracking_uri, short_error(e),
            )  # fmt: skip
            return
        log.info("mlflow run %s ended %s", self._run_id, status)


def short_error(e: BaseException) -> str:
    """One line for an MLflow / HTTP failure ("connection refused", "timed out", or its first
    line, shortened)."""
    text = str(e)
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("Failed to establish a new connection", "no connection"),
        ("Read timed out", "timed out"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
    ):
        if needle in text:
            return short
    first = (text.strip().splitlines() or [type(e).__name__])[0]
    return first[:200] + ("..." if len(first) > 200 else "")


def _read_unfinished(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _remember_unfinished(path: Path, uri: str, run_id: str, status: str) -> None:
    entries = [d for d in _read_unfinished(path) if d.get("run_id") != run_id]
    _remember_unfinished_all(path, [*entries, {"uri": uri, "run_id": run_id, "status": status}])


def _finish_unfinished(client: Any, path: Path, uri: str) -> None:
    """End the runs an earlier job on this work directory could not end (server down then)."""
    entries = _read_unfinished(path)
    if not entries:
        return
    left = []
    for d in entries:
        if d.get("uri") != uri:
            left.append(d)
            continue
        try:
            client.set_terminated(d["run_id"], d.get("status", "FAILED"))
            log.warning("mlflow run %s marked %s (its job could not reach %s)", d["run_id"], d.get("status"), uri)
        except Exception:  # noqa: BLE001 - deleted meanwhile, or still unreachable: try next time
            left.append(d)
    if left:
        _remember_unfinished_all(path, left)
    else:
        path.unlink(missing_ok=True)


def _remember_unfinished_all(path: Path, entries: list[dict]) -> None:
    from recsys_matta.train.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps(entries, indent=1))


def set_http_limits(retries: int, timeout_s: int) -> None:
    """Bound MLflow's HTTP retries and per-request timeout (read by MLflow at each request);
    variables the user set in the environment are left alone."""
    for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", retries), ("MLFLOW_HTTP_REQUEST_TIMEOUT", timeout_s),
                       ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 1)):  # fmt: skip
        if var in os.environ and var not in _HTTP_ENV:
            continue
        os.environ[var] = str(value)
        _HTTP_ENV.add(var)


def is_remote(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(("http://", "https://"))


# ----------------------------------------------------------------------------------- the store
def resolve_tracking_uri(workdir: str | Path, tracking_uri: str | None = None) -> str:
    """`tracking_uri`, else `$MLFLOW_TRACKING_URI`, else `sqlite:///<abs workdir>/mlflow.db`."""
    if tracking_uri:
        return tracking_uri
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    return "sqlite:///" + str(Path(workdir).resolve() / DB_FILE)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (relative paths against the cwd), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or len(uri) == len(prefix) or ":memory:" in uri:
        return None
    return Path(uri[len(prefix) :].split("?")[0]).resolve()


def local_artifact_root(uri: str) -> Path | None:
    """Where new experiments keep artifacts: `mlartifacts/` beside a sqlite file, else None."""
    db = sqlite_path(uri)
    return None if db is None else db.parent / ARTIFACT_DIR


def configure_mlflow(workdir: str | Path, tracking_uri: str | None = None) -> str:
    """Point this process's MLflow at the store and return its URI (the model registry uses the
    same store unless `$MLFLOW_REGISTRY_URI` says otherwise).

    For use without a run (`matta register`, `matta compare`); `open_tracker` calls it.
    """
    import mlflow

    uri = resolve_tracking_uri(workdir, tracking_uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)  # the registry follows unless $MLFLOW_REGISTRY_URI is set
    return uri


def ensure_experiment(client: Any, name: str, artifact_root: Path | None) -> str:
    """Id of experiment `name`, created (artifacts under `artifact_root` when given) or restored
    from the deleted state when needed."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = artifact_root.as_uri() if artifact_root is not None else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as e:  # created concurrently by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise e
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _context_tags() -> dict[str, str]:
    """MLflow's usual source / user / git tags (best effort)."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return dict(resolve_tags({}))
    except Exception:  # noqa: BLE001 - tags are a convenience, never a reason to fail
        return {}


def open_tracker(
    workdir: str | Path,
    experiment: str,
    run_name: str,
    tracking_uri: str | None = None,
    *,
    enabled: bool = True,
    tags: Mapping[str, Any] | None = None,
) -> MlflowTracker | NullTracker:
    """Open this invocation's run (see the module docstring).

    Args:
        workdir: the run's working directory (holds `mlflow.db` / `mlartifacts` by default).
        experiment: MLflow experiment name (created when missing).
        run_name: the run's display name.
        tracking_uri: overrides `$MLFLOW_TRACKING_URI` and the embedded default.
        enabled: False returns a `NullTracker` without touching MLflow (ranks != 0).
        tags: extra run tags.
    """
    if not enabled:
        return NullTracker()
    import mlflow
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    uri = configure_mlflow(workdir, tracking_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=mlflow.get_registry_uri())
    unfinished = Path(workdir) / UNFINISHED_FILE
    _finish_unfinished(client, unfinished, uri)
    experiment_id = ensure_experiment(client, experiment, local_artifact_root(uri))
    run_tags = _context_tags()
    if (active := mlflow.active_run()) is not None:
        run_tags[MLFLOW_PARENT_RUN_ID] = active.info.run_id
    for k, v in (tags or {}).items():
        run_tags[clean_key(k)] = truncate(str(v), TAG_VALUE_LIMIT)
    run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    log.info("mlflow run %s (%s), experiment %r, %s", run.info.run_id, run_name, experiment, uri)
    return MlflowTracker(client, run.info.run_id, experiment_id, uri, unfinished)


def open_day_tracker(
    workdir: str | Path,
    experiment: str,
    run_name: str,
    key: Mapping[str, str],
    tracking_uri: str | None = None,
    *,
    enabled: bool = True,
    tags: Mapping[str, Any] | None = None,
) -> MlflowTracker | NullTracker:
    """Like `open_tracker`, but reopen the newest run of `experiment` whose tags equal `key`
    when there is one (status back to RUNNING), so the stages of one scheduled day, each its own
    process and possibly retried, write to ONE run. `tracker.resumed` says which happened."""
    if not enabled:
        return NullTracker()
    import mlflow
    from mlflow import MlflowClient

    uri = configure_mlflow(workdir, tracking_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=mlflow.get_registry_uri())
    unfinished = Path(workdir) / UNFINISHED_FILE
    _finish_unfinished(client, unfinished, uri)  # first: a run left RUNNING by an outage
    exp = client.get_experiment_by_name(experiment)
    if exp is not None and exp.lifecycle_stage != "deleted":
        where = " and ".join(f"tags.`{clean_key(k)}` = '{v}'" for k, v in key.items())
        runs = client.search_runs([exp.experiment_id], where, max_results=1, order_by=["attributes.start_time DESC"])
        if runs:
            run_id = runs[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            log.info("mlflow run %s (%s) resumed, experiment %r, %s", run_id, run_name, experiment, uri)
            tracker = MlflowTracker(client, run_id, exp.experiment_id, uri, unfinished)
            tracker.resumed = True  # type: ignore[attr-defined]
            return tracker
    tracker = open_tracker(workdir, experiment, run_name, tracking_uri, tags={**(tags or {}), **key})
    tracker.resumed = False  # type: ignore[attr-defined]
    return tracker
