"""YAML loading with errors that name the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from recsys_matta.errors import UserError
from recsys_matta.specs.feature_spec import FeatureSpec

M = TypeVar("M", bound=BaseModel)


class SpecError(UserError, ValueError):
    """A spec or config file is missing, not YAML, or does not validate."""


def _key_path(loc: tuple, data: object) -> str:
    """`('features', 2, 'sparse', 'hash_buckets')` -> `features[2].hash_buckets` (with the
    feature's name when it has one: `features[2] (user_id).hash_buckets`)."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            name = None
            if isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                name = node[part].get("name")
            if name:
                out += f" ({name})"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(node, dict) and isinstance(part, str) and node.get("kind") == part and part not in node:
            continue  # the discriminator tag pydantic inserts
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "<top level>"


def validate_mapping(model: type[M], data: object, source: str) -> M:
    """Validate `data` as `model`; on failure raise SpecError listing every bad key."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = _key_path(err["loc"], data)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "union_tag_invalid":
                msg = f"unknown kind {err['ctx']['tag']!r}; expected {err['ctx']['expected_tags']}"
            elif err["type"] == "union_tag_not_found":
                msg = "required key 'kind' is missing"
            elif err["type"] == "value_error":
                msg = msg.removeprefix("Value error, ")
            lines.append(f"  {key}: {msg}")
        raise SpecError(f"{source}: invalid {model.__name__}:\n" + "\n".join(lines)) from None


def read_yaml(path: str | Path) -> object:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: file not found")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{p}: not valid YAML: {e}") from None


def load_spec(path: str | Path) -> FeatureSpec:
    """Load and validate a feature spec YAML file."""
    return validate_mapping(FeatureSpec, read_yaml(path), str(path))
