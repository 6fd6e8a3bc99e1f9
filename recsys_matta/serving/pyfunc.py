"""The servable Student: an MLflow pyfunc model that scores RAW feature rows.

    DataFrame of raw columns (as named in the spec)        one row per request row
      -> request_table: pandas -> pyarrow, request-boundary type fixes only
      -> encode_table(spec, table, "request", labels=False)   THE preprocessing (shared with
                                                              the training reader)
      -> StandaloneModel(values, lengths, dense) -> sigmoid -> (B,) float64 probabilities

Input columns: sparse ids as ints or strings (`hash_buckets` features) or ints (`vocab_size`),
lists of them for multi-valued features, numbers for dense features. Nulls are allowed
everywhere (a null id gives an empty bag, a null dense value the spec's default); unseen ids are
allowed (hashed, or sent to the OOV row). Extra columns (labels, the day) are ignored.

Artifacts: the model folder (`StandaloneModel.save`: `config.json` with the dims and block
configs, `state_dict.pt` with tensors only, loaded with `torch.load(weights_only=True)` and no
fallback: a file that would need unpickling is refused, naming it) and the spec YAML. Loading needs torch, pyarrow, pandas and this package; not
TorchRec.

Code: logged as MLflow "models from code" (`student_model.py`, nothing pickled). The model does
NOT carry `code_paths`: it relies on `recsys_matta` being installed in the serving environment
(the repo's venv or docker image; `mlflow models serve --env-manager local`). code_paths would
put a second copy of the package on `sys.path` and shadow the installed one in training
processes. The package version is recorded in the model config / metadata
(`recsys_matta_version`) and in its requirements; `load_context` warns on a mismatch.
"""

from __future__ import annotations

import logging
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
import yaml
from torch import nn

from recsys_matta.data.encode import encode_table
from recsys_matta.errors import DataError
from recsys_matta.models.standalone import FORMAT as STANDALONE_FORMAT
from recsys_matta.specs import FeatureSpec, SparseFeature, load_spec

if TYPE_CHECKING:
    from mlflow.models.signature import ModelSignature

    from recsys_matta.tracking.tracker import MlflowTracker

log = logging.getLogger(__name__)

SPEC_ARTIFACT = "spec"
MODEL_ARTIFACT = "model"
PACKAGE = "recsys-matta"
DEFAULT_BATCH_SIZE = 8192
MODEL_CODE = Path(__file__).with_name("student_model.py")


def package_version() -> str:
    try:
        return importlib_metadata.version(PACKAGE)
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"


# ------------------------------------------------------------------------------ request -> arrow
def _as_int_ids(arr: pa.ChunkedArray, to: pa.DataType, col: str) -> pa.ChunkedArray:
    """Float ids (pandas / JSON turn int columns with nulls into floats) -> integers, nulls kept."""
    try:
        return pc.cast(arr, to, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(
            f"request: column {col!r} holds non-integer numbers; ids must be integers or strings"
        ) from None


def _fix_sparse(f: SparseFeature, arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """Request-boundary type fixes of one sparse column (no id mapping happens here)."""
    t = arr.type
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_floating(t.value_type):
        return _as_int_ids(arr, pa.list_(pa.int64()), f.source)
    if pa.types.is_floating(t):
        return _as_int_ids(arr, pa.int64(), f.source)
    return arr


def request_table(spec: FeatureSpec, df: pd.DataFrame) -> pa.Table:
    """The spec's feature columns of a request DataFrame as a pyarrow Table (column by column).

    Only request-boundary fixes happen here (NaN / None -> null; integral float ids -> int64,
    as pandas and JSON give for int columns with nulls); hashing, vocab and dense transforms are
    `encode_table`'s. A missing column raises `DataError` there, naming it.
    """
    sparse = {f.source: f for f in spec.sparse}
    columns: dict[str, pa.ChunkedArray] = {}
    for col in dict.fromkeys(f.source for f in spec.features):
        if col not in df.columns:
            continue
        try:
            arr = pa.chunked_array([pa.array(df[col], from_pandas=True)])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataError(f"request: column {col!r} cannot be read: {e}") from None
        columns[col] = _fix_sparse(sparse[col], arr) if col in sparse else arr
    return pa.table(columns)  # no spec column at all: encode_table names the first missing one


# --------------------------------------------------------------------------------- the model
def _save_weights(model: nn.Module, path: Path) -> str:
    """Write the weights folder (`StandaloneModel.save`: config.json + tensors-only
    state_dict.pt); returns the format name stored in the model metadata. Nothing is pickled, so
    only models that save themselves as plain data (`save` + `load`) can be logged."""
    if not (callable(getattr(model, "save", None)) and callable(getattr(type(model), "load", None))):
        raise TypeError(
            f"cannot log a {type(model).__name__}: the served model is saved as plain tensors + "
            f"JSON (a StandaloneModel from extraction); other modules would need pickling"
        )
    model.save(path)
    return STANDALONE_FORMAT


def load_weights(path: str | Path) -> nn.Module:
    """Inverse of `_save_weights` (CPU, eval mode). Only `torch.load(weights_only=True)`: a file
    that is not plain tensors is refused (`UnsafeFileError` naming it), never unpickled."""
    from recsys_matta.models.standalone import StandaloneModel

    return StandaloneModel.load(path).eval()


def spec_yaml(spec: FeatureSpec) -> str:
    """The spec as YAML that `load_spec` reads back to an equal spec."""
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False)


class StudentPyfunc(mlflow.pyfunc.PythonModel):
    """Raw rows -> click probabilities (see the module docstring).

    Logged as "models from code" (`student_model.py`), so nothing is pickled; the settings come
    from the model config (`batch_size`, `recsys_matta_version`).

    Args:
        batch_size: rows per forward pass (bounds memory when re-scoring a whole day).
    """

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.batch_size = int(batch_size)
        self.spec: FeatureSpec | None = None
        self.model: nn.Module | None = None

    def load_context(self, context: Any) -> None:
        config = dict(getattr(context, "model_config", None) or {})
        self.batch_size = int(config.get("batch_size", self.batch_size))
        logged, here = config.get("recsys_matta_version"), package_version()
        if logged is not None and logged != here:
            log.warning("Student logged with %s %s; %s is installed", PACKAGE, logged, here)
        self.load(context.artifacts[SPEC_ARTIFACT], context.artifacts[MODEL_ARTIFACT])

    def load(self, spec_path: str | Path, model_path: str | Path) -> "StudentPyfunc":
        """Load spec and weights from files (what `load_context` does with the artifacts)."""
        self.spec = load_spec(spec_path)
        self.model = load_weights(model_path)
        return self

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> np.ndarray:
        """(B,) float64 click probabilities of the rows of `model_input`, in order."""
        return self.predict_df(model_input)

    def predict_df(self, df: pd.DataFrame) -> np.ndarray:
        """As `predict`, without MLflow's schema enforcement in front."""
        if self.spec is None or self.model is None:
            raise RuntimeError("StudentPyfunc: call load() / load_context() first")
        table = request_table(self.spec, df if isinstance(df, pd.DataFrame) else pd.DataFrame(df))
        out = np.empty(table.num_rows, dtype=np.float64)  # (B,)
        if table.num_rows == 0:
            encode_table(self.spec, table, source="request", labels=False)  # checks the columns
            return out
        with torch.inference_mode():
            for start in range(0, table.num_rows, self.batch_size):
                chunk = table.slice(start, self.batch_size)
                enc = encode_table(self.spec, chunk, source="request", labels=False)
                values, lengths = torch.from_numpy(enc.values), torch.from_numpy(enc.lengths)
                logits = self.model(values, lengths, torch.from_numpy(enc.dense))  # (b,)
                out[start : start + chunk.num_rows] = torch.sigmoid(logits.float()).numpy()
        return out


# ----------------------------------------------------------------------------- signature, logging
def input_schema(spec: FeatureSpec):
    """One required column per spec feature: `AnyType` for sparse ids (ints or strings, lists
    for multi-valued; MLflow's typed `long` / `Array` columns reject the nulls serving allows),
    `double` for dense values (NaN = null)."""
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    cols = []
    for f in spec.features:
        if f.source in {c.name for c in cols}:
            continue
        kind = AnyType() if isinstance(f, SparseFeature) else DataType.double
        cols.append(ColSpec(kind, f.source))
    return Schema(cols)


def signature(spec: FeatureSpec) -> "ModelSignature":
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    probabilities = Schema([TensorSpec(np.dtype("float64"), (-1,))])  # (B,)
    return ModelSignature(inputs=input_schema(spec), outputs=probabilities)


def requirements() -> list[str]:
    """Pinned to what is installed here (explicit, so MLflow need not infer them)."""
    out = []
    for pkg in ("torch", "numpy", "pandas", "pyarrow", "pyyaml", "pydantic", "mlflow"):
        try:
            out.append(f"{pkg}=={importlib_metadata.version(pkg)}")
        except importlib_metadata.PackageNotFoundError:  # pragma: no cover
            out.append(pkg)
    return out + [f"{PACKAGE}=={package_version()}"]


def log_student(
    tracker: "MlflowTracker",
    standalone: nn.Module,
    spec: FeatureSpec,
    input_example: pd.DataFrame | None,
    name: str = "student",
    *,
    step: int = 0,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Log `standalone` as a pyfunc model of the tracker's run; returns its `models:/...` URI.

    Args:
        tracker: the run (an `MlflowTracker`; the model is linked to it as an output).
        standalone: `StandaloneModel` (or any module with `forward(values, lengths, dense)`).
        spec: the feature spec the model was trained with (stored as YAML inside the model).
        input_example: a few raw rows (stored with the model and scored once as a check; only
            the spec's columns are kept).
        name: the logged model's name.
        step: the step (day index) the model belongs to.
        metadata: extra MLmodel metadata (e.g. day, AucLoss).
    """
    import mlflow
    from mlflow.models import Model

    if not hasattr(tracker, "experiment_id"):
        raise TypeError("log_student needs an MlflowTracker (tracking is disabled on this rank)")
    meta = {
        "recsys_matta_version": package_version(),
        "spec_name": spec.name,
        "columns": [c.name for c in input_schema(spec).inputs],
    }
    if callable(getattr(standalone, "num_parameters", None)):
        meta["parameters"] = standalone.num_parameters()
    if getattr(standalone, "label", ""):
        meta["label"] = standalone.label
    meta.update(metadata or {})
    if input_example is not None:
        input_example = input_example[[c for c in meta["columns"] if c in input_example.columns]]
    with tempfile.TemporaryDirectory() as tmp:
        spec_file, weights_file = Path(tmp) / "spec.yaml", Path(tmp) / "student"
        spec_file.write_text(spec_yaml(spec))
        meta["weights_format"] = _save_weights(standalone, weights_file)
        logged = mlflow.initialize_logged_model(
            name=name, source_run_id=tracker.run_id, experiment_id=tracker.experiment_id
        )
        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=mlflow.pyfunc,
            run_id=tracker.run_id,
            model_id=logged.model_id,
            step=step,
            python_model=str(MODEL_CODE),
            model_config={
                "batch_size": DEFAULT_BATCH_SIZE,
                "recsys_matta_version": package_version(),
            },
            artifacts={SPEC_ARTIFACT: str(spec_file), MODEL_ARTIFACT: str(weights_file)},
            signature=signature(spec),
            input_example=input_example,
            pip_requirements=requirements(),
            metadata=meta,
        )
    log.info("logged Student pyfunc %s (run %s)", info.model_uri, tracker.run_id)
    return info.model_uri
