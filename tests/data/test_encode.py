"""encode_table / to_batch: exact KJT contents, dense transforms, labels, counts, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch

from recsys_matta.data.encode import (
    Encoded,
    ReadCounts,
    check_schema,
    encode_table,
    to_batch,
)
from recsys_matta.data.hashing import hash_to_buckets
from recsys_matta.errors import DataError
from recsys_matta.specs import FeatureSpec

E = math.e


def make_spec(labels: dict | None = None, **overrides: dict) -> FeatureSpec:
    features = {
        "uid": {"name": "uid", "group": "user", "kind": "sparse", "hash_buckets": 1000},
        "city": {"name": "city", "group": "user", "kind": "sparse", "hash_buckets": 50},
        "hour": {"name": "hour", "group": "context", "kind": "sparse", "vocab_size": 24},
        "tags": {
            "name": "tags", "group": "item", "kind": "sparse", "multi_valued": True,
            "vocab_size": 10,
        },
        "price": {
            "name": "price", "group": "item", "kind": "dense", "transform": "log1p",
            "normalize": True, "mean": 1.0, "std": 2.0,
        },
        "delta": {
            "name": "delta", "group": "item", "kind": "dense", "transform": "signed_log1p",
            "clip": [-1.0, 1.0], "default": 5.0,
        },
        "pos": {"name": "pos", "group": "context", "kind": "dense", "default": -1.0},
    }
    for name, extra in overrides.items():
        features[name] = {**features[name], **extra}
    return FeatureSpec.model_validate(
        {
            "name": "t",
            "labels": labels or {"teacher": "t", "event": "y"},
            "features": list(features.values()),
        }
    )


def rows() -> dict[str, list]:
    return {
        "uid": [7, None, 9, 7],
        "city": ["a", "b", None, "a"],
        "hour": [0, 23, 24, -1],
        "tags": [[1, 2], None, [], [3, None, 4]],
        "price": [0.0, E - 1, None, -3.0],
        "delta": [E - 1, -(math.sqrt(E) - 1), float("nan"), float("inf")],
        "pos": [3, None, 0, 2],
        "t": [0.2, 0.9, 0.0, 1.0],
        "y": [0, 1, 0, 1],
    }


def table(**changes: list) -> pa.Table:
    return pa.table({**rows(), **changes})


def h(values: list, buckets: int) -> list[int]:
    return hash_to_buckets(pa.array(values), buckets).tolist()


def test_kjt_exact_contents_with_multi_valued_and_null_ids() -> None:
    spec = make_spec()
    batch = to_batch(encode_table(spec, table(), "f.parquet"))
    kjt = batch.sparse
    assert kjt.keys() == ["uid", "city", "hour", "tags"]
    assert kjt.stride() == 4
    # feature-major: uid (null -> empty bag), city (null -> empty), hour (24, -1 -> OOV row 24),
    # tags (null list -> empty, null element dropped)
    assert kjt.lengths().tolist() == [1, 0, 1, 1] + [1, 1, 0, 1] + [1, 1, 1, 1] + [2, 0, 0, 2]
    expected = h([7, 9, 7], 1000) + h(["a", "b", "a"], 50) + [0, 23, 24, 24] + [1, 2, 3, 4]
    assert kjt.values().tolist() == expected
    assert kjt.values().dtype == torch.int64 and kjt.lengths().dtype == torch.int32
    jt = kjt.to_dict()
    assert [t.tolist() for t in jt["tags"].to_dense()] == [[1, 2], [], [], [3, 4]]
    assert [t.tolist() for t in jt["hour"].to_dense()] == [[0], [23], [24], [24]]


def test_dense_transforms_fill_clip_and_normalise() -> None:
    batch = to_batch(encode_table(make_spec(), table(), "f.parquet"))
    # price: log1p(max(x, 0)), null -> default 0, then (x - 1) / 2
    # delta: signed_log1p, clip [-1, 1]; NaN and inf -> default 5 -> log1p(5) = 1.79 -> 1
    # pos: as-is, null -> default -1
    expected = [
        [-0.5, 1.0, 3.0],
        [0.0, -0.5, -1.0],
        [-0.5, 1.0, 0.0],
        [-0.5, 1.0, 2.0],
    ]
    assert batch.dense.dtype == torch.float32 and batch.dense.shape == (4, 3)
    torch.testing.assert_close(batch.dense, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_counts_of_nulls_oov_and_fills() -> None:
    counts = encode_table(make_spec(), table(), "f.parquet").counts
    assert counts == ReadCounts(
        rows_read=4,
        rows_kept=4,
        sparse_null={"uid": 1, "city": 1, "tags": 2},
        sparse_oov={"hour": 2},
        dense_filled={"price": 1, "delta": 2, "pos": 1},
    )
    d = counts.as_dict()
    assert d["sparse_null"] == 4 and d["sparse_null/tags"] == 2 and d["dense_filled"] == 4
    assert d["label_null_dropped"] == 0 and d["sparse_oov/hour"] == 2


def test_labels_exact() -> None:
    batch = to_batch(encode_table(make_spec(), table(), "f.parquet"))
    assert batch.teacher.tolist() == pytest.approx([0.2, 0.9, 0.0, 1.0])
    assert batch.event is not None and batch.event.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert batch.teacher.dtype == torch.float32 and batch.event.dtype == torch.float32


def test_invalid_labels_drop_rows_and_are_counted() -> None:
    t = table(
        t=[None, float("nan"), 1.5, 0.3],
        y=[1, 0, 2, 1],  # row 2: both out of range (counted once); row 3 kept
    )
    enc = encode_table(make_spec(), t, "f.parquet")
    assert enc.counts.rows_read == 4 and enc.counts.rows_kept == 1
    assert enc.counts.label_null_dropped == 2
    assert enc.counts.label_out_of_range_dropped == 1
    # per column (a row may count in both columns) and per file, for error messages
    assert enc.counts.label_null == {"t": 2} and enc.counts.label_out_of_range == {"t": 1, "y": 1}
    assert enc.counts.dropped_by_file == {"f.parquet": 3} and enc.counts.dropped == 3
    logged = enc.counts.as_dict()
    assert logged["label_null/t"] == 2 and logged["label_out_of_range/y"] == 1
    assert not any("f.parquet" in k or k.startswith("dropped_by_file") for k in logged)
    assert enc.counts.summary() == (
        "4 rows read, 1 kept, 3 dropped (2 null label, 1 label out of range), "
        "1 dense values filled, 1 null ids, 1 OOV ids"
    )
    assert enc.teacher.tolist() == pytest.approx([0.3]) and enc.event.tolist() == [1.0]
    kjt = to_batch(enc).sparse  # the kept row is the last one: uid 7, city a, hour -1, [3, 4]
    assert kjt.lengths().tolist() == [1, 1, 1, 2]
    assert kjt.values().tolist() == h([7], 1000) + h(["a"], 50) + [24, 3, 4]
    assert enc.dense[0].tolist() == pytest.approx([-0.5, 1.0, 2.0])


def test_null_and_out_of_range_in_one_row_counts_as_null() -> None:
    enc = encode_table(make_spec(), table(t=[None, 0.5, 0.5, 0.5], y=[3, 0, 1, 0]), "f.parquet")
    assert (enc.counts.label_null_dropped, enc.counts.label_out_of_range_dropped) == (1, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"t": [0.1, None, 0.2, 0.3]}, "f.parquet: column 't' (teacher label): row 1 is null/NaN"),
        ({"t": [0.1, 0.2, -0.5, 0.3]}, "f.parquet: column 't' (teacher label): row 2 is -0.5"),
        ({"y": [0, 1, 0, 5]}, "f.parquet: column 'y' (event label): row 3 is 5.0 (outside {0, 1})"),
    ],
)
def test_invalid_labels_fail_when_the_spec_says_so(change: dict, message: str) -> None:
    spec = make_spec(labels={"teacher": "t", "event": "y", "on_invalid": "fail"})
    with pytest.raises(DataError) as e:
        encode_table(spec, table(**change), "f.parquet")
    assert str(e.value).startswith(message)
    # the override wins over the spec
    enc = encode_table(spec, table(**change), "f.parquet", on_invalid="drop")
    assert enc.counts.rows_kept == 3


def test_without_teacher_column_teacher_is_the_event_label() -> None:
    spec = make_spec(labels={"event": "y"})
    batch = to_batch(encode_table(spec, table(), "f.parquet"))
    assert batch.teacher.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert batch.event is not None and batch.event.tolist() == [0.0, 1.0, 0.0, 1.0]


def test_serving_ignores_label_columns() -> None:
    t = table().drop_columns(["t", "y"])
    enc = encode_table(make_spec(), t, "request", labels=False)
    assert enc.teacher is None and enc.event is None
    batch = to_batch(enc)
    assert batch.event is None and torch.isnan(batch.teacher).all() and batch.size == 4
    # the features are encoded exactly as in training
    train = to_batch(encode_table(make_spec(), table(), "f.parquet"))
    assert torch.equal(batch.sparse.values(), train.sparse.values())
    assert torch.equal(batch.dense, train.dense)


def test_oov_error_names_file_and_column() -> None:
    spec = make_spec(hour={"oov": "error"})
    with pytest.raises(DataError, match=r"^f\.parquet: column 'hour' \(feature 'hour'\): 2 ids "
                       r"outside \[0, 24\), e\.g\. 24"):
        encode_table(spec, table(), "f.parquet")


@pytest.mark.parametrize(
    ("t", "message"),
    [
        (table().drop_columns(["hour"]), "f.parquet: column 'hour' (feature 'hour') is missing"),
        (table().drop_columns(["y"]), "f.parquet: column 'y' (event label) is missing"),
        (
            table(hour=["0", "1", "2", "3"]),
            "f.parquet: column 'hour' (feature 'hour') has type string; expected integer ids",
        ),
        (
            table(uid=[[1], [2], [3], [4]]),
            "f.parquet: column 'uid' (feature 'uid') has type list<item: int64>; "
            "expected integer or string ids",
        ),
        (
            table(tags=[1, 2, 3, 4]),
            "f.parquet: column 'tags' (feature 'tags') has type int64; "
            "expected list of integer ids",
        ),
        (
            table(price=["1", "2", "3", "4"]),
            "f.parquet: column 'price' (feature 'price') has type string; expected a number",
        ),
        (
            table(t=["a", "b", "c", "d"]),
            "f.parquet: column 't' (teacher label) has type string; expected a number",
        ),
    ],
)
def test_schema_errors_name_file_and_column(t: pa.Table, message: str) -> None:
    with pytest.raises(DataError) as e:
        encode_table(make_spec(), t, "f.parquet")
    assert str(e.value).startswith(message)


def test_check_schema_accepts_the_valid_table_and_skips_labels_for_serving() -> None:
    check_schema(make_spec(), table().schema, "f.parquet")
    check_schema(make_spec(), table().drop_columns(["t"]).schema, "f.parquet", labels=False)


def test_chunked_table_dictionary_strings_and_record_batch_agree() -> None:
    whole = encode_table(make_spec(), table(), "f.parquet")
    chunked = pa.concat_tables([table().slice(0, 1), table().slice(1, 3)])
    assert chunked.column("uid").num_chunks == 2
    dict_city = table(city=pa.array(rows()["city"]).dictionary_encode())
    for other in (
        encode_table(make_spec(), chunked, "f.parquet"),
        encode_table(make_spec(), table().to_batches()[0], "f.parquet"),
        encode_table(make_spec(), dict_city, "f.parquet"),
    ):
        assert other.values.tolist() == whole.values.tolist()
        assert other.lengths.tolist() == whole.lengths.tolist()
        assert np.array_equal(other.dense, whole.dense)


def test_encoded_take_and_concat() -> None:
    enc = encode_table(make_spec(), table(), "f.parquet")
    parts = [
        encode_table(make_spec(), table().slice(0, 3), "f.parquet"),
        encode_table(make_spec(), table().slice(3), "f.parquet"),
    ]
    joined = Encoded.concat(parts)
    for name in ("values", "lengths", "dense", "teacher", "event"):
        assert np.array_equal(getattr(joined, name), getattr(enc, name)), name
    assert joined.counts == enc.counts
    taken = enc.take(np.array([3, 0]))  # rows 3 and 0, in that order
    assert taken.lengths.tolist() == [1, 1] + [1, 1] + [1, 1] + [2, 2]
    assert taken.values.tolist() == h([7, 7], 1000) + h(["a", "a"], 50) + [24, 0, 3, 4, 1, 2]
    assert taken.teacher.tolist() == pytest.approx([1.0, 0.2])
    assert np.array_equal(taken.dense, enc.dense[[3, 0]])
    empty = enc.take(np.zeros(0, dtype=np.int64))
    assert empty.num_rows == 0 and to_batch(empty).sparse.lengths().numel() == 0


def test_empty_input_and_all_null_column() -> None:
    enc = encode_table(make_spec(), table().slice(0, 0), "f.parquet")
    batch = to_batch(enc)
    assert batch.size == 0 and batch.dense.shape == (0, 3) and batch.sparse.values().numel() == 0
    nulls = table(city=pa.nulls(4, pa.string()), pos=pa.nulls(4))
    enc = encode_table(make_spec(), nulls, "f.parquet")
    assert enc.counts.sparse_null["city"] == 4 and enc.counts.dense_filled["pos"] == 4
    assert enc.dense[:, 2].tolist() == [-1.0] * 4


def test_to_batch_makes_no_copies_and_no_warnings() -> None:
    enc = encode_table(make_spec(), table(), "f.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "non-writable NumPy array" warning
        batch = to_batch(enc)
    assert batch.dense.data_ptr() == enc.dense.ctypes.data
    assert batch.sparse.values().data_ptr() == enc.values.ctypes.data
    assert batch.sparse.length_per_key() == [3, 3, 4, 4]


def test_read_counts_sum() -> None:
    a = ReadCounts(rows_read=3, rows_kept=2, label_null_dropped=1, sparse_null={"x": 1})
    b = ReadCounts(rows_read=2, rows_kept=2, sparse_null={"x": 2, "y": 1}, dense_filled={"z": 4})
    assert a + b == ReadCounts(
        rows_read=5,
        rows_kept=4,
        label_null_dropped=1,
        sparse_null={"x": 3, "y": 1},
        dense_filled={"z": 4},
    )
