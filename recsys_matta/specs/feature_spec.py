"""Feature spec: which Parquet columns are user / context / item features, sparse or dense, and
which columns hold the Teacher soft label, the event label and the partition key.

Loaded from YAML (`feature_specs/*.yaml`) and validated: unknown keys, duplicate names, bad types
and inconsistent options are errors that name the file and the key (see `load_spec`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Group = Literal["user", "context", "item"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Partition(_Strict):
    """Hive-style day partitions: `<root>/<column>=<value formatted with format>/*.parquet`.

    Args:
        column: partition key in the directory names (`day` gives `day=2026-11-01/`).
        format: `strftime` format of the value.
    """

    column: str = "day"
    format: str = "%Y-%m-%d"


class Labels(_Strict):
    """Label columns. At least one of `teacher` / `event` must be given.

    Args:
        teacher: column with the Teacher's soft label in [0, 1].
        event: column with the observed event (click) in {0, 1}.
        on_invalid: rows whose label is null or outside its range are dropped and counted
            (`drop`) or stop the read with an error naming file and column (`fail`).
    """

    teacher: str | None = None
    event: str | None = None
    on_invalid: Literal["drop", "fail"] = "drop"

    @model_validator(mode="after")
    def _one_label(self) -> "Labels":
        if self.teacher is None and self.event is None:
            raise ValueError("give at least one of 'teacher' or 'event'")
        return self


class SparseFeature(_Strict):
    """A categorical feature: one id per row, or a list of ids when `multi_valued`.

    Exactly one of `hash_buckets` / `vocab_size`:
      * `hash_buckets`: ids (ints or strings) go through a stable 64-bit hash
        (`recsys_matta.data.hashing`) modulo the bucket count; new ids always land somewhere.
      * `vocab_size`: integer ids used as-is in `[0, vocab_size)`; an id outside it goes to an
        extra OOV row (`oov: bucket`, the table gets `vocab_size + 1` rows) or is an error
        (`oov: error`).

    Args:
        name: feature name (the KJT key).
        group: user, context or item.
        column: Parquet column (defaults to `name`).
        multi_valued: the column holds a list of ids per row (jagged).
        hash_buckets: number of hash buckets.
        vocab_size: number of valid ids when ids are used as-is.
        oov: what to do with an id outside `vocab_size` (`bucket` or `error`).
        table: name of the embedding table; features naming the same table share it.
    """

    name: str
    group: Group
    kind: Literal["sparse"] = "sparse"
    column: str | None = None
    multi_valued: bool = False
    hash_buckets: Annotated[int, Field(gt=0)] | None = None
    vocab_size: Annotated[int, Field(gt=0)] | None = None
    oov: Literal["bucket", "error"] = "bucket"
    table: str | None = None

    @model_validator(mode="after")
    def _one_id_space(self) -> "SparseFeature":
        if (self.hash_buckets is None) == (self.vocab_size is None):
            raise ValueError("give exactly one of 'hash_buckets' or 'vocab_size'")
        return self

    @property
    def source(self) -> str:
        return self.column or self.name

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def num_embeddings(self) -> int:
        """Rows of the embedding table this feature needs."""
        if self.hash_buckets is not None:
            return self.hash_buckets
        assert self.vocab_size is not None
        return self.vocab_size + (1 if self.oov == "bucket" else 0)


class DenseFeature(_Strict):
    """A numeric feature: `x -> clip(transform(x))`, then `(x - mean) / std` when `normalize`.

    Args:
        name: feature name.
        group: user, context or item.
        column: Parquet column (defaults to `name`).
        transform: `none`; `log1p` = log(1 + max(x, 0)); `signed_log1p` = sign(x) log(1 + |x|).
        clip: optional `[low, high]` applied after the transform.
        normalize: standardise with `mean` / `std` (fixed in the spec, so training and serving
            apply the same numbers).
        mean: mean of the transformed value.
        std: standard deviation of the transformed value (> 0).
        default: value used for null / NaN inputs (before the transform); counted by the reader.
    """

    name: str
    group: Group
    kind: Literal["dense"] = "dense"
    column: str | None = None
    transform: Literal["none", "log1p", "signed_log1p"] = "none"
    clip: tuple[float, float] | None = None
    normalize: bool = False
    mean: float = 0.0
    std: Annotated[float, Field(gt=0)] = 1.0
    default: float = 0.0

    @model_validator(mode="after")
    def _clip_order(self) -> "DenseFeature":
        if self.clip is not None and self.clip[0] > self.clip[1]:
            raise ValueError(f"clip low {self.clip[0]} is above high {self.clip[1]}")
        return self

    @property
    def source(self) -> str:
        return self.column or self.name


Feature = Annotated[SparseFeature | DenseFeature, Field(discriminator="kind")]


class FeatureSpec(_Strict):
    """A dataset's feature spec (see module docstring and docs/architecture.md section 4).

    Args:
        name: dataset name.
        partition: day-partition layout.
        labels: teacher / event label columns.
        features: the features, in KJT key order (sparse) and dense-tensor column order (dense).
    """

    name: str
    partition: Partition = Partition()
    labels: Labels
    features: list[Feature] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "FeatureSpec":
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate feature names: {dup}")
        label_cols = {c for c in (self.labels.teacher, self.labels.event) if c}
        clash = sorted(label_cols & {f.source for f in self.features})
        if clash:
            raise ValueError(f"label columns used as features: {clash}")
        if self.partition.column in {f.source for f in self.features} | label_cols:
            raise ValueError(f"partition column {self.partition.column!r} is also a feature or label")
        if not self.sparse:
            raise ValueError("at least one sparse feature is needed (the embedding tables)")
        tables: dict[str, SparseFeature] = {}
        for f in self.sparse:
            first = tables.setdefault(f.table_name, f)
            if first.num_embeddings != f.num_embeddings:
                raise ValueError(
                    f"features {first.name!r} and {f.name!r} share table {f.table_name!r} "
                    f"but need {first.num_embeddings} and {f.num_embeddings} rows"
                )
        return self

    @property
    def sparse(self) -> list[SparseFeature]:
        return [f for f in self.features if isinstance(f, SparseFeature)]

    @property
    def dense(self) -> list[DenseFeature]:
        return [f for f in self.features if isinstance(f, DenseFeature)]

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def label_column(self) -> str:
        """The default training label: the Teacher soft label, else the event label."""
        return self.labels.teacher or self.labels.event  # type: ignore[return-value]

    def source_columns(self) -> list[str]:
        """Every Parquet column the reader needs (features, then labels), without duplicates."""
        cols = [f.source for f in self.features]
        cols += [c for c in (self.labels.teacher, self.labels.event) if c]
        return list(dict.fromkeys(cols))
