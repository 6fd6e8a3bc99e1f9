"""Raw Parquet/Arrow columns -> model inputs. The ONE place this happens.

The reader calls `encode_table` on every chunk of a day; the serving pyfunc calls it on the
incoming DataFrame (converted to a `pyarrow.Table`) with `labels=False`. Training and serving
therefore share hashing, vocab handling, dense transforms and normalisation and cannot drift.

Rules (docs/architecture.md section 4):
  * sparse, `hash_buckets`: ints or strings -> `hash_to_buckets` (stable 64-bit hash).
  * sparse, `vocab_size`: integer ids as-is; an id outside `[0, vocab_size)` goes to the OOV
    row `vocab_size` (counted in `sparse_oov`) or raises `DataError` (`oov: error`).
  * a null id (single-valued), a null list or a null element of a list gives no id: the row's
    bag is empty or shorter (counted per feature in `sparse_null`, one per null id/list).
  * dense: null / NaN / +-inf -> the feature's `default` (counted in `dense_filled`), then the
    transform, clip and `(x - mean) / std` when `normalize`.
  * labels: a row whose Teacher or event label is null / NaN (`label_null_dropped`) or outside
    its range (Teacher [0, 1], event {0, 1}; `label_out_of_range_dropped`) is dropped, or the
    read fails when the spec says `on_invalid: fail`.
  * schema: a missing column or a column of the wrong type raises `DataError` naming the file
    (`source`) and the column.
All work is vectorised numpy / pyarrow compute over whole chunks; there is no per-row Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_matta.data.encoded import Encoded, ReadCounts
from recsys_matta.data.hashing import hash_to_buckets
from recsys_matta.errors import DataError
from recsys_matta.specs import DenseFeature, FeatureSpec, SparseFeature

if TYPE_CHECKING:
    from recsys_matta.data.batch import Batch

OnInvalid = Literal["drop", "fail"]


# --------------------------------------------------------------------------------------------
# Schema checks
# --------------------------------------------------------------------------------------------


def _base_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _id_type_ok(f: SparseFeature, t: pa.DataType) -> bool:
    t = _base_type(t)
    if pa.types.is_null(t):  # an all-null column (e.g. from pandas): empty bags
        return True
    if f.vocab_size is not None:
        return pa.types.is_integer(t)
    return pa.types.is_integer(t) or _is_string(t)


def _sparse_expected(f: SparseFeature) -> str:
    ids = "integer" if f.vocab_size is not None else "integer or string"
    return f"list of {ids} ids" if f.multi_valued else f"{ids} ids"


def _type_error(source: str, col: str, what: str, got: pa.DataType, expected: str) -> DataError:
    return DataError(f"{source}: column {col!r} ({what}) has type {got}; expected {expected}")


def label_columns(spec: FeatureSpec) -> list[tuple[str, str]]:
    """[(column, 'teacher' | 'event')] for the label columns the spec names."""
    out = []
    if spec.labels.teacher:
        out.append((spec.labels.teacher, "teacher"))
    if spec.labels.event:
        out.append((spec.labels.event, "event"))
    return out


def needed_columns(spec: FeatureSpec, labels: bool = True) -> list[str]:
    """The columns `encode_table` reads (features, then labels when `labels`), no duplicates."""
    cols = [f.source for f in spec.features]
    if labels:
        cols += [c for c, _ in label_columns(spec)]
    return list(dict.fromkeys(cols))


def check_schema(spec: FeatureSpec, schema: pa.Schema, source: str, labels: bool = True) -> None:
    """Raise `DataError` naming `source` and the column when a needed column is missing or has a
    type the spec cannot use."""
    names = set(schema.names)
    wanted: list[tuple[str, str]] = [(f.source, f"feature {f.name!r}") for f in spec.features]
    if labels:
        wanted += [(c, f"{which} label") for c, which in label_columns(spec)]
    for col, what in wanted:
        if col not in names:
            have = ", ".join(schema.names[:20]) + (", ..." if len(schema.names) > 20 else "")
            raise DataError(f"{source}: column {col!r} ({what}) is missing; the file has: {have}")
    for f in spec.features:
        t = schema.field(f.source).type
        if pa.types.is_null(t):
            continue
        if isinstance(f, SparseFeature):
            ok = (_is_list(t) and _id_type_ok(f, t.value_type)) if f.multi_valued else (
                not _is_list(t) and _id_type_ok(f, t)
            )
            if not ok:
                raise _type_error(source, f.source, f"feature {f.name!r}", t, _sparse_expected(f))
        elif not _is_number(t):
            raise _type_error(source, f.source, f"feature {f.name!r}", t, "a number")
    if labels:
        for col, which in label_columns(spec):
            t = schema.field(col).type
            if not (_is_number(t) or pa.types.is_null(t)):
                raise _type_error(source, col, f"{which} label", t, "a number")


def type_kind(t: pa.DataType) -> str:
    """What a column's values are, for drift checks: `integer`, `float`, `boolean`, `string`,
    `list<...>` or `null` (dictionary encoding and integer / float widths do not matter: the
    encoder treats them alike; an integer id and its string form hash to different rows)."""
    t = _base_type(t)
    if _is_list(t):
        return f"list<{type_kind(t.value_type)}>"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "boolean"
    if _is_string(t):
        return "string"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def column_kinds(spec: FeatureSpec, schema: pa.Schema, labels: bool = True) -> dict[str, str]:
    """{column: kind} of the columns `encode_table` reads: `type_kind` for sparse id columns
    (where integer vs string decides the embedding row), `number` for dense and label columns
    of any numeric type (the encoder reads them all as float)."""
    ids = {f.source for f in spec.sparse}
    out = {}
    for c in needed_columns(spec, labels):
        if c not in schema.names:
            continue
        t = schema.field(c).type
        out[c] = type_kind(t) if c in ids or not _is_number(_base_type(t)) else "number"
    return out


# --------------------------------------------------------------------------------------------
# Column conversions (one arrow Array chunk at a time)
# --------------------------------------------------------------------------------------------


def _to_float(arr: pa.Array, dtype: type = np.float32) -> np.ndarray:
    """(N,) numpy of `dtype` with NaN for nulls; a fresh, writable array."""
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan, dtype=dtype)
    if arr.null_count:
        arr = pc.cast(arr, pa.float64())  # nulls -> NaN in to_numpy
    return np.array(arr.to_numpy(zero_copy_only=False), dtype=dtype)


def _lengths_and_ids(
    f: SparseFeature, arr: pa.Array, counts: ReadCounts
) -> tuple[np.ndarray, pa.Array]:
    """One sparse column -> (lengths (N,) int32, its non-null ids as an arrow array)."""
    n = len(arr)
    if pa.types.is_null(arr.type):
        nulls, lengths, flat = n, np.zeros(n, dtype=np.int32), pa.array([], pa.int64())
    elif f.multi_valued:
        nulls = arr.null_count
        if nulls:
            lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy().astype(np.int32)
        else:
            lengths = np.diff(arr.offsets.to_numpy()).astype(np.int32, copy=False)
        flat = arr.flatten()  # respects slicing, skips the contents of null lists
        if flat.null_count:
            bad = ~flat.is_valid().to_numpy(zero_copy_only=False)  # (nnz,)
            row = np.repeat(np.arange(n), lengths)  # row of every flat element
            lengths = lengths - np.bincount(row[bad], minlength=n).astype(np.int32)
            nulls += int(bad.sum())
            flat = flat.drop_null()
    else:
        nulls = arr.null_count
        if nulls:
            lengths = arr.is_valid().to_numpy(zero_copy_only=False).astype(np.int32)
            flat = arr.drop_null()
        else:
            lengths, flat = np.ones(n, dtype=np.int32), arr
    if nulls:
        counts.sparse_null[f.name] = counts.sparse_null.get(f.name, 0) + nulls
    return lengths, flat


def _fill_ids(
    f: SparseFeature, arr: pa.Array, out: np.ndarray, source: str, counts: ReadCounts
) -> None:
    """Table rows of the non-null ids `arr`, written into `out` (N,) int64."""
    if len(arr) == 0:
        return
    if f.hash_buckets is not None:
        out[:] = hash_to_buckets(arr, f.hash_buckets)
        return
    if pa.types.is_dictionary(arr.type):
        arr = pc.cast(arr, arr.type.value_type)
    ids = arr.to_numpy(zero_copy_only=False)  # (N,) any integer type
    vocab = f.vocab_size
    assert vocab is not None
    if ids.min() >= 0 and ids.max() < vocab:  # the common case: two reductions, no mask
        out[:] = ids
        return
    oov = (ids < 0) | (ids >= vocab)
    n_oov = int(np.count_nonzero(oov))
    if f.oov == "error":
        raise DataError(
            f"{source}: column {f.source!r} (feature {f.name!r}): {n_oov} ids outside "
            f"[0, {vocab}), e.g. {ids[oov][0]}; set oov: bucket in the spec to map them to "
            "an OOV row"
        )
    counts.sparse_oov[f.name] = counts.sparse_oov.get(f.name, 0) + n_oov
    out[:] = ids
    out[oov] = vocab


def _log1p_nonneg(x: np.ndarray) -> None:
    """In-place log(1 + x) for x >= 0, float32: `log(u) * x / (u - 1)` with `u = 1 + x`
    (Goldberg's trick, ~1 ulp; numpy's `log1p` has no SIMD loop and is several times slower)."""
    u = x + np.float32(1.0)
    d = u - np.float32(1.0)
    np.log(u, out=u)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(x, d, out=d)
        np.multiply(u, d, out=d)
    tiny = u == 0  # u was 1: x below float32 resolution, where log1p(x) = x
    if tiny.any():
        d[tiny] = x[tiny]
    x[:] = d


def _dense_column(f: DenseFeature, arr: pa.Array, out: np.ndarray, counts: ReadCounts) -> None:
    """One dense column -> `out` (N,) float32: fill, transform, clip, normalise (in place)."""
    x = out
    if arr.null_count or pa.types.is_null(arr.type):
        x[:] = _to_float(arr)
    else:
        x[:] = arr.to_numpy(zero_copy_only=False)  # cast to float32 while copying
    if not np.isfinite(x).all():
        bad = ~np.isfinite(x)
        counts.dense_filled[f.name] = counts.dense_filled.get(f.name, 0) + int(bad.sum())
        x[bad] = f.default
    if f.transform == "log1p":
        _log1p_nonneg(np.maximum(x, 0.0, out=x))
    elif f.transform == "signed_log1p":
        sign = np.sign(x)
        _log1p_nonneg(np.abs(x, out=x))
        x *= sign
    if f.clip is not None:
        np.clip(x, f.clip[0], f.clip[1], out=x)
    if f.normalize:
        x -= np.float32(f.mean)
        x /= np.float32(f.std)


def _labels(
    spec: FeatureSpec,
    cols: dict[str, pa.Array],
    source: str,
    on_invalid: OnInvalid,
    counts: ReadCounts,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Label arrays {'teacher'|'event': (N,) float32} and the keep mask (None = keep all)."""
    values: dict[str, np.ndarray] = {}
    null = out_of_range = None
    for col, which in label_columns(spec):
        y = _to_float(cols[col], np.float32)  # (N,)
        if which == "teacher":
            ok = (y >= 0) & (y <= 1)  # False for NaN
        else:
            ok = (y == 0) | (y == 1)
        values[which] = y
        if ok.all():
            continue
        y_null = np.isnan(y)
        y_bad = ~ok & ~y_null
        if on_invalid == "fail":
            i = int(np.argmin(ok))
            rng = "[0, 1]" if which == "teacher" else "{0, 1}"
            what = "null/NaN" if y_null[i] else f"{y[i]} (outside {rng})"
            raise DataError(
                f"{source}: column {col!r} ({which} label): row {i} is {what}; "
                f"{int(y_null.sum())} null and {int(y_bad.sum())} out-of-range values "
                "(labels.on_invalid is 'fail')"
            )
        n_null, n_bad = int(y_null.sum()), int(y_bad.sum())
        if n_null:
            counts.label_null[col] = counts.label_null.get(col, 0) + n_null
        if n_bad:
            counts.label_out_of_range[col] = counts.label_out_of_range.get(col, 0) + n_bad
        null = y_null if null is None else null | y_null
        out_of_range = y_bad if out_of_range is None else out_of_range | y_bad
    if null is None and out_of_range is None:
        return values, None
    n = len(next(iter(values.values())))
    null = np.zeros(n, dtype=bool) if null is None else null
    out_of_range = np.zeros(n, dtype=bool) if out_of_range is None else out_of_range & ~null
    counts.label_null_dropped += int(null.sum())  # a row counts once, as null if any is null
    counts.label_out_of_range_dropped += int(out_of_range.sum())
    keep = ~(null | out_of_range)
    return {k: v[keep] for k, v in values.items()}, keep


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def label_counts(spec: FeatureSpec, table: pa.Table, source: str, on_invalid: OnInvalid | None = None) -> ReadCounts:
    """The label check of `encode_table` alone, on a table of (at least) the label columns: the
    counts it records (rows read / kept, label null / out of range, dropped by file)."""
    cols = {col: table.column(col).combine_chunks() for col, _ in label_columns(spec)}
    counts = ReadCounts(rows_read=table.num_rows)
    _, keep = _labels(spec, cols, source, on_invalid or spec.labels.on_invalid, counts)
    counts.rows_kept = table.num_rows if keep is None else int(keep.sum())
    if counts.dropped:
        counts.dropped_by_file[source] = counts.dropped
    return counts


def valid_labels(
    spec: FeatureSpec, table: pa.Table | pa.RecordBatch, source: str, on_invalid: OnInvalid | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """`encode_table`'s label rule alone: ({'teacher'|'event': (kept,) float32}, keep mask (N,)
    or None = all kept). A row is kept only when every label column of the spec is valid
    (Teacher in [0, 1], event in {0, 1}); `on_invalid: fail` raises as the reader does. Scoring
    a day through any other path (the gate) uses this, so it keeps exactly the rows training
    and evaluation keep."""
    rb = _as_record_batch(table, [c for c, _ in label_columns(spec)])
    cols = dict(zip(rb.schema.names, rb.columns))
    return _labels(spec, cols, source, on_invalid or spec.labels.on_invalid, ReadCounts(rows_read=rb.num_rows))


def id_counts(spec: FeatureSpec, table: pa.Table, source: str) -> ReadCounts:
    """The sparse-id counts of `encode_table` alone (`sparse_null`, `sparse_oov`, `rows_read`)
    on a table of (at least) the sparse columns, without hashing: what the id budget needs
    before the day's data pass. Counts every row (rows with an invalid label included)."""
    counts = ReadCounts(rows_read=table.num_rows, rows_kept=table.num_rows)
    for f in spec.sparse:
        _, ids = _lengths_and_ids(f, table.column(f.source).combine_chunks(), counts)
        if f.vocab_size is not None:
            _fill_ids(f, ids, np.empty(len(ids), dtype=np.int64), source, counts)
    return counts


def _as_record_batch(table: pa.Table | pa.RecordBatch, columns: list[str]) -> pa.RecordBatch:
    """A RecordBatch with the needed columns (a chunked Table's columns are combined)."""
    if isinstance(table, pa.RecordBatch):
        return table
    table = table.select(columns)
    arrays = [c.combine_chunks() for c in table.columns]
    return pa.RecordBatch.from_arrays(arrays, schema=table.schema)


def encode_table(
    spec: FeatureSpec,
    table: pa.Table | pa.RecordBatch,
    source: str,
    labels: bool = True,
    *,
    on_invalid: OnInvalid | None = None,
    check: bool = True,
) -> Encoded:
    """Check the schema, drop rows with invalid labels, and encode every feature.

    Args:
        spec: the feature spec.
        table: raw rows with (at least) the spec's columns; a chunked Table is combined first.
        source: name of the file the rows come from, used in error messages.
        labels: read the label columns (training); False for serving (labels ignored).
        on_invalid: override the spec's `labels.on_invalid` (`drop` or `fail`).
        check: run `check_schema` (the reader checks each file once and passes False).
    Returns:
        `Encoded` with B = kept rows.
    Raises:
        DataError: missing / mistyped column, `oov: error` id outside the vocab, or an invalid
            label with `on_invalid: fail`; the message names `source` and the column.
    """
    if check:
        check_schema(spec, table.schema, source, labels)
    rb = _as_record_batch(table, needed_columns(spec, labels))
    cols = dict(zip(rb.schema.names, rb.columns))
    counts = ReadCounts(rows_read=rb.num_rows)
    label_values: dict[str, np.ndarray] = {}
    if labels:
        policy = on_invalid or spec.labels.on_invalid
        label_values, keep = _labels(spec, cols, source, policy, counts)
        if counts.dropped:
            counts.dropped_by_file[source] = counts.dropped
        if keep is not None:
            rb = rb.filter(pa.array(keep))
            cols = dict(zip(rb.schema.names, rb.columns))
    n = counts.rows_kept = rb.num_rows

    per_feature = [_lengths_and_ids(f, cols[f.source], counts) for f in spec.sparse]
    lengths = np.concatenate([ln for ln, _ in per_feature])  # (F*B,) feature-major
    values = np.empty(sum(len(ids) for _, ids in per_feature), dtype=np.int64)  # (nnz,)
    start = 0
    for f, (_, ids) in zip(spec.sparse, per_feature):
        _fill_ids(f, ids, values[start : start + len(ids)], source, counts)
        start += len(ids)

    dense_t = np.empty((len(spec.dense), n), dtype=np.float32)  # (D, B), one row per feature
    for j, f in enumerate(spec.dense):
        _dense_column(f, cols[f.source], dense_t[j], counts)

    event = label_values.get("event")
    teacher = label_values.get("teacher", event)
    return Encoded(
        keys=spec.sparse_names,
        values=values,
        lengths=lengths,
        dense=np.ascontiguousarray(dense_t.T),  # (B, D)
        teacher=teacher,
        event=event,
        counts=counts,
    )


def to_batch(enc: Encoded) -> Batch:
    """`Encoded` -> `Batch` without copying (the numpy arrays are fresh and writable).

    With `labels=False` encodings `teacher` is a NaN placeholder, so accidental training on a
    serving batch gives a non-finite loss instead of silently learning zeros.
    (torch / torchrec are imported here, not at module level: `encode_table` alone, e.g. in a
    serving process, does not load torchrec.)
    """
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from recsys_matta.data.batch import Batch

    b, nf = enc.num_rows, len(enc.keys)
    length_per_key = enc.lengths.reshape(nf, b).sum(axis=1).tolist() if nf else []
    offset_per_key = [0, *np.cumsum(length_per_key).tolist()]
    sparse = KeyedJaggedTensor(
        keys=list(enc.keys),
        values=torch.from_numpy(enc.values),
        lengths=torch.from_numpy(enc.lengths),
        stride=b,
        length_per_key=length_per_key,
        offset_per_key=offset_per_key,
    )
    teacher = (
        torch.from_numpy(enc.teacher)
        if enc.teacher is not None
        else torch.full((b,), float("nan"), dtype=torch.float32)
    )
    return Batch(
        sparse=sparse,
        dense=torch.from_numpy(enc.dense),
        teacher=teacher,
        event=None if enc.event is None else torch.from_numpy(enc.event),
    )
