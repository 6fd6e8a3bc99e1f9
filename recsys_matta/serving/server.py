"""`matta serve`: the registered Student over HTTP, through `mlflow models serve`.

    matta serve --workdir RUN [--name matta-student] [--alias champion] [--port 5001]
    curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \
         -d '{"dataframe_split": {"columns": [...raw feature columns...], "data": [[...], ...]}}'

The model takes the raw feature columns named in the spec (the pyfunc Student does hashing and
transforms itself) and returns one probability per row. The store is `$MLFLOW_TRACKING_URI`, or
the run directory's embedded `mlflow.db`. mlflow starts its scoring server by running
`uvicorn` through the shell, so the interpreter's own `bin/` is put first on PATH: the command
works from a virtual environment that is not activated (cron, systemd).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from recsys_matta.errors import UserError


def serve_command(model_uri: str, host: str, port: int, workers: int) -> list[str]:
    """The `mlflow models serve` command line for `model_uri` (this interpreter's mlflow)."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
        "--env-manager", "local", "-h", host, "-p", str(port), "-w", str(workers),
    ]  # fmt: skip


def serve_env(tracking_uri: str) -> dict[str, str]:
    """The environment of the server: the store, and this interpreter's bin/ first on PATH."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, *[p for p in env.get("PATH", "").split(os.pathsep) if p and p != bindir]])
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return env


def resolve_model(workdir: Path | None, tracking_uri: str | None, name: str, alias: str) -> tuple[str, str, int]:
    """(models:/ URI, tracking URI, version) of `name@alias`; `UserError` when it does not exist."""
    from recsys_matta.tracking.registry import alias_version
    from recsys_matta.tracking.tracker import configure_mlflow

    if workdir is None and not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise UserError("give --workdir (its mlflow.db) or --tracking-uri / $MLFLOW_TRACKING_URI")
    uri = configure_mlflow(workdir or Path.cwd(), tracking_uri)
    version = alias_version(name, alias)
    if version is None:
        raise UserError(f"{uri}: registered model {name!r} has no version with alias {alias!r} (run `matta daily` first)")
    return f"models:/{name}@{alias}", uri, version


def serve(
    workdir: Path | None, tracking_uri: str | None, name: str, alias: str, host: str, port: int, workers: int
) -> None:
    """Replace this process with the scoring server (signals reach it directly)."""
    model_uri, uri, version = resolve_model(workdir, tracking_uri, name, alias)
    print(f"serving {model_uri} (version {version}) from {uri} on http://{host}:{port}/invocations", flush=True)
    cmd = serve_command(model_uri, host, port, workers)
    os.execve(cmd[0], cmd, serve_env(uri))
