"""Turning configs and metric dicts into MLflow-shaped key/value pairs (pure Python, no mlflow).

* Params: nested mappings are flattened with `.` (`{"model": {"d_ta": 64}}` -> `model.d_ta`);
  lists of mappings that all carry a unique `name` are keyed by it (`spec.features.user_id.
  hash_buckets`), other lists of mappings by index, lists of scalars become one JSON string.
  Values are strings cut to MLflow's limit (6000 characters), the cut marked with `...`.
* Metrics: nested mappings are flattened with `/` (`{"student": {"auc_loss": .3}}` ->
  `student/auc_loss`), values must be numbers (bools count as 0/1, None is skipped).

Keys keep only the characters MLflow accepts (letters, digits, `_ - . / space :`); anything else
becomes `_`.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys_matta.train.records import DayRecord

# mlflow.utils.validation: MAX_PARAM_VAL_LENGTH, MAX_ENTITY_KEY_LENGTH (checked in the tests).
PARAM_VALUE_LIMIT = 6000
KEY_LIMIT = 250
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def clean_key(key: str) -> str:
    """Replace characters MLflow rejects in param / metric names by `_`."""
    return _BAD_KEY_CHARS.sub("_", str(key))


def _plain(value: Any) -> Any:
    """pydantic models, dataclasses, enums and paths -> plain Python containers / scalars."""
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def _list_keys(items: list) -> list[str] | None:
    """Keys for a list of mappings: their unique `name`s, else indices; None if not all mappings."""
    if not items or not all(isinstance(_plain(i), Mapping) for i in items):
        return None
    names = [_plain(i).get("name") for i in items]
    if all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names):
        return names  # type: ignore[return-value]
    return [str(i) for i in range(len(items))]


def truncate(text: str, limit: int = PARAM_VALUE_LIMIT) -> str:
    """Cut `text` to at most `limit` characters, ending in `...` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return json.dumps([_plain(v) for v in value], default=str)
    return str(value)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into `{dotted.key: string value}` (see the module docstring)."""
    out: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        node = _plain(node)
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
            return
        if isinstance(node, (list, tuple)):
            keys = _list_keys(list(node))
            if keys is not None:
                for k, v in zip(keys, node):
                    walk(v, f"{key}.{k}" if key else k)
                return
        out[clean_key(key)] = truncate(_param_value(node))

    walk(params, prefix)
    return out


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested metrics into `{"a/b": float}`; None values are skipped.

    Raises:
        TypeError: a value is neither a number, a bool, None nor a mapping (names the key).
    """
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten_metrics(v, key))
        elif v is None:
            continue
        elif isinstance(v, numbers.Number) and not isinstance(v, complex):
            out[clean_key(key)] = float(v)  # bool, int, float, numpy scalars
        elif getattr(v, "ndim", None) == 0 and hasattr(v, "item"):
            out[clean_key(key)] = float(v.item())  # 0-d numpy array / torch tensor
        else:
            raise TypeError(f"metric {key!r}: expected a number, got {type(v).__name__} {v!r}")
    return out


def day_metrics(record: "DayRecord") -> dict[str, float]:
    """A day's record -> MLflow metric names for that day's step: `<model>/<metric>`
    (`student/auc_loss`, `student/rel_improvement`), `loss/<term>`, `reader/<count>`,
    `seconds/<phase>`, `eval_rows`, `train_rows`, `train_steps`."""
    out: dict[str, Any] = {}
    for model in ("student", "ta", "baseline"):
        m = record.metrics_of(model)
        if m is not None:
            out[model] = dataclasses.asdict(m)
            rel = record.rel_improvement(model)
            if rel is not None:
                out[model]["rel_improvement"] = rel
    out.update(
        loss=record.loss,
        reader=record.reader,
        seconds=record.seconds,
        eval_rows=record.eval_rows,
        train_rows=record.train_rows,
        train_steps=record.train_steps,
    )
    return flatten_metrics(out)
