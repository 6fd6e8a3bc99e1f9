"""Typed, validated feature specs (and run configs, in `config`)."""

from recsys_matta.specs.feature_spec import (
    DenseFeature,
    FeatureSpec,
    Labels,
    Partition,
    SparseFeature,
)
from recsys_matta.specs.loading import SpecError, load_spec, read_yaml, validate_mapping

__all__ = [
    "DenseFeature",
    "FeatureSpec",
    "Labels",
    "Partition",
    "SparseFeature",
    "SpecError",
    "load_spec",
    "read_yaml",
    "validate_mapping",
]
