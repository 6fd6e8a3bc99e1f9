"""DayReader: streaming, rank sharding, shuffling, bounded memory, counts, bad input.

Hand-written days where feature `rid` carries the row's global index (a vocab feature, ids used
as-is), so every batch says exactly which rows it holds.
"""

from __future__ import annotations

import math
import threading
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_matta.data.reader import DayReader
from recsys_matta.errors import DataError
from recsys_matta.specs import FeatureSpec

DAY = "2026-01-05"

SPEC = FeatureSpec.model_validate(
    {
        "name": "rows",
        "labels": {"teacher": "t", "event": "y"},
        "features": [
            {"name": "rid", "group": "user", "kind": "sparse", "vocab_size": 1_000_000},
            {"name": "tags", "group": "item", "kind": "sparse", "multi_valued": True,
             "vocab_size": 7},
            {"name": "x", "group": "item", "kind": "dense"},
        ],
    }
)


def rows_table(start: int, n: int) -> pa.Table:
    rid = np.arange(start, start + n)
    return pa.table(
        {
            "rid": pa.array(rid, pa.int64()),
            "tags": pa.array([[int(r % 7)] * int(r % 3) for r in rid], pa.list_(pa.int64())),
            "x": pa.array(rid * 0.5, pa.float64()),
            "t": pa.array((rid % 10) / 10, pa.float32()),
            "y": pa.array(rid % 2, pa.int8()),
        }
    )


def write_day(root: Path, day: str, sizes: list[int], row_group: int = 4) -> int:
    """Files of `sizes` rows (row ids continue across files); returns the day's rows."""
    folder = root / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, n in enumerate(sizes):
        pq.write_table(rows_table(start, n), folder / f"part-{i:05d}.parquet",
                       row_group_size=row_group)
        start += n
    return start


def read_all(reader: DayReader, day: str = DAY) -> list[np.ndarray]:
    """Row ids of every batch, checking each batch's contents against its ids."""
    out = []
    for batch in reader.iter_day(day):
        kjt, b = batch.sparse, batch.size
        assert kjt.keys() == ["rid", "tags"] and kjt.stride() == b
        lengths = kjt.lengths().numpy().reshape(2, b)  # (F, B) feature-major
        rid, tags = np.split(kjt.values().numpy(), [lengths[0].sum()])
        assert lengths[0].tolist() == [1] * b
        assert lengths[1].tolist() == (rid % 3).tolist()
        assert tags.tolist() == np.repeat(rid % 7, rid % 3).tolist()
        assert batch.dense[:, 0].tolist() == (rid * 0.5).tolist()
        assert batch.teacher.numpy() == pytest.approx((rid % 10) / 10)
        assert batch.event.tolist() == (rid % 2).tolist()
        out.append(rid)
    return out


@pytest.fixture
def day_root(tmp_path: Path) -> tuple[Path, int]:
    n = write_day(tmp_path, DAY, [10, 0, 7, 13, 3])  # an empty file in the middle, too
    return tmp_path, n


def test_single_reader_streams_every_row_in_order(day_root: tuple[Path, int]) -> None:
    root, n = day_root
    reader = DayReader(SPEC, root, batch_size=8)
    batches = read_all(reader)
    assert np.concatenate(batches).tolist() == list(range(n))
    assert [len(b) for b in batches] == [7, 7, 7, 6, 6]  # 33 rows in ceil(33 / 8) = 5 batches
    c = reader.counts(DAY)
    assert (c.rows_read, c.rows_kept, c.label_null_dropped) == (n, n, 0)
    assert reader.num_rows(DAY) == n


@pytest.mark.parametrize("shuffle", [0, 7])
@pytest.mark.parametrize("batch_size", [1, 3, 8, 64])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_sharding_covers_every_row_once(
    day_root: tuple[Path, int], world: int, batch_size: int, shuffle: int
) -> None:
    root, n = day_root
    per_rank = []
    for rank in range(world):
        reader = DayReader(SPEC, root, batch_size, rank=rank, world_size=world,
                           shuffle_buffer=shuffle, prefetch=1)
        per_rank.append(read_all(reader))
        assert reader.counts(DAY).rows_read == len(np.concatenate(per_rank[-1]))
    counts = {len(b) for b in per_rank}
    assert counts == {math.ceil(n / (world * batch_size))}  # same number of batches per rank
    every = np.concatenate([np.concatenate(b) for b in per_rank])
    assert sorted(every.tolist()) == list(range(n))  # the union, each row exactly once
    sizes = [len(x) for b in per_rank for x in b]
    assert max(sizes) <= batch_size
    if batch_size > 1:  # 33 rows >= world: no empty batch
        assert min(sizes) > 0
        assert max(sizes) - min(sizes) <= 1
    if shuffle == 0:  # contiguous ranges: rank r holds rows [r n / N, (r + 1) n / N)
        for rank, b in enumerate(per_rank):
            lo, hi = rank * n // world, (rank + 1) * n // world
            assert np.concatenate(b).tolist() == list(range(lo, hi))


def test_more_ranks_than_rows_gives_equal_counts_and_empty_batches(tmp_path: Path) -> None:
    write_day(tmp_path, DAY, [3])
    got = [read_all(DayReader(SPEC, tmp_path, 4, rank=r, world_size=5)) for r in range(5)]
    assert [len(b) for b in got] == [1] * 5
    assert sorted(np.concatenate([b[0] for b in got]).tolist()) == [0, 1, 2]


def test_shuffle_is_seeded_bounded_and_keeps_batch_sizes(tmp_path: Path) -> None:
    n = write_day(tmp_path, DAY, [200, 150], row_group=16)
    plain = read_all(DayReader(SPEC, tmp_path, 10))
    a = read_all(DayReader(SPEC, tmp_path, 10, shuffle_buffer=50, seed=1))
    b = read_all(DayReader(SPEC, tmp_path, 10, shuffle_buffer=50, seed=1))
    c = read_all(DayReader(SPEC, tmp_path, 10, shuffle_buffer=50, seed=2))
    assert [len(x) for x in a] == [len(x) for x in plain]
    flat_a = np.concatenate(a)
    assert sorted(flat_a.tolist()) == list(range(n))
    assert flat_a.tolist() == np.concatenate(b).tolist()  # same seed, same order
    assert flat_a.tolist() != np.concatenate(c).tolist()  # another seed, another order
    assert flat_a.tolist() != list(range(n))
    # bounded look-ahead: no row comes out more than window (50) + 2 batches before its place
    position = np.empty(n, dtype=np.int64)
    position[flat_a] = np.arange(n)
    assert np.max(np.arange(n) - position) < 50 + 2 * 10
    assert np.max(np.arange(n) - position) > 10  # rows do move across batches


def test_prefetch_and_synchronous_reading_agree(day_root: tuple[Path, int]) -> None:
    root, _ = day_root
    sync = read_all(DayReader(SPEC, root, 5, prefetch=0))
    threaded = read_all(DayReader(SPEC, root, 5, prefetch=3, read_rows=2))
    assert [x.tolist() for x in sync] == [x.tolist() for x in threaded]


@pytest.mark.parametrize(("prefetch", "shuffle"), [(0, 0), (2, 0), (2, 300)])
def test_memory_is_bounded_by_batches_not_by_the_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefetch: int, shuffle: int
) -> None:
    """Count rows Parquet has handed out minus rows the consumer has received."""
    n = write_day(tmp_path, DAY, [6000, 4000], row_group=500)
    read = [0]
    original = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for rb in original(self, *args, **kwargs):
            read[0] += rb.num_rows
            yield rb

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    batch_size, read_rows = 50, 100
    reader = DayReader(SPEC, tmp_path, batch_size, prefetch=prefetch, read_rows=read_rows,
                       shuffle_buffer=shuffle)
    consumed, held = 0, []
    for batch in reader.iter_day(DAY):
        consumed += batch.size
        held.append(read[0] - consumed)
        threading.Event().wait(0.001)  # let the prefetch threads run ahead as far as they can
    assert consumed == n and read[0] == n
    if prefetch:
        bound = batch_size * (prefetch + 2) + 4 * read_rows
    else:
        bound = batch_size + read_rows
    bound += shuffle + batch_size if shuffle else 0
    assert max(held) <= bound < n // 10


def prefetch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "DayReader-prefetch"}


def test_stopping_early_stops_the_threads(day_root: tuple[Path, int]) -> None:
    root, _ = day_root
    before = prefetch_threads()
    it = DayReader(SPEC, root, 2, prefetch=1, read_rows=1).iter_day(DAY)
    next(it)
    assert len(prefetch_threads() - before) == 2  # the decode and the encode thread
    it.close()
    assert prefetch_threads() == before


def test_label_drops_are_counted_per_day(tmp_path: Path) -> None:
    folder = tmp_path / f"day={DAY}"
    folder.mkdir()
    t = rows_table(0, 6)
    t = t.set_column(3, "t", pa.array([0.1, None, 0.3, 2.0, 0.5, 0.6], pa.float32()))
    pq.write_table(t, folder / "part-0.parquet")
    reader = DayReader(SPEC, tmp_path, 4)
    got = np.concatenate(list(read_batch_rids(reader)))
    assert got.tolist() == [0, 2, 4, 5]
    c = reader.counts(DAY)
    assert (c.rows_read, c.rows_kept, c.label_null_dropped, c.label_out_of_range_dropped) == (
        6, 4, 1, 1
    )
    with pytest.raises(DataError, match=r"part-0\.parquet: column 't' \(teacher label\): row 1"):
        list(DayReader(SPEC, tmp_path, 4, label_check="fail").iter_day(DAY))
    pq.write_table(rows_table(6, 3), folder / "part-1.parquet")  # a clean second file
    reader = DayReader(SPEC, tmp_path, 4, rank=1, world_size=2)  # the whole day, whatever the rank
    pre = reader.label_counts(DAY)  # from the label columns alone, before any data pass
    assert (pre.rows_read, pre.rows_kept, pre.label_null, pre.label_out_of_range) == (9, 7, {"t": 1}, {"t": 1})
    assert pre.dropped_by_file == {str(folder / "part-0.parquet"): 2}


def read_batch_rids(reader: DayReader):
    for batch in reader.iter_day(DAY):
        yield batch.sparse.values().numpy()[: batch.size]  # rid: the first B ids


def test_counts_need_a_finished_pass(day_root: tuple[Path, int]) -> None:
    root, _ = day_root
    reader = DayReader(SPEC, root, 4)
    with pytest.raises(KeyError, match="iterate iter_day"):
        reader.counts(DAY)


def test_days_and_selection(tmp_path: Path) -> None:
    for d in ["2026-01-03", "2026-01-01", "2026-01-02", "2026-01-10"]:
        write_day(tmp_path, d, [2])
    reader = DayReader(SPEC, tmp_path, 4)
    assert reader.days() == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-10"]
    assert reader.select_days(None) == reader.days()
    assert reader.select_days("2026-01-02..2026-01-09") == ["2026-01-02", "2026-01-03"]
    assert reader.select_days("..2026-01-02") == ["2026-01-01", "2026-01-02"]
    assert reader.select_days("2026-01-03..") == ["2026-01-03", "2026-01-10"]
    assert reader.select_days("2026-01-10,2026-01-01") == ["2026-01-01", "2026-01-10"]
    with pytest.raises(DataError, match=f"day 2026-01-04 not found under {tmp_path}"):
        reader.select_days("2026-01-01,2026-01-04")
    with pytest.raises(DataError, match="2026-01-05 is after 2026-01-02"):
        reader.select_days("2026-01-05..2026-01-02")
    with pytest.raises(DataError, match="no days under"):
        reader.select_days("2026-01-04..2026-01-09")
    with pytest.raises(DataError, match="does not match the format"):
        reader.select_days("Jan 1")


def test_missing_day_is_an_error_naming_day_and_root(tmp_path: Path) -> None:
    write_day(tmp_path, DAY, [2])
    reader = DayReader(SPEC, tmp_path, 4)
    with pytest.raises(DataError, match=f"day 2026-01-06 not found under {tmp_path}"):
        reader.iter_day("2026-01-06")
    with pytest.raises(DataError, match="2026-01-06 not found"):
        reader.num_rows("2026-01-06")


def test_empty_day_warns_and_yields_nothing(tmp_path: Path) -> None:
    (tmp_path / "day=2026-01-07").mkdir()  # no files
    write_day(tmp_path, "2026-01-08", [0])  # one file without rows
    reader = DayReader(SPEC, tmp_path, 4)
    for day in ("2026-01-07", "2026-01-08"):
        with pytest.warns(UserWarning, match=f"day {day} .* has no rows"):
            assert list(reader.iter_day(day)) == []
        assert reader.counts(day).rows_read == 0
        assert reader.num_rows(day) == 0


def test_bad_schema_fails_before_reading_and_names_file_and_column(tmp_path: Path) -> None:
    write_day(tmp_path, DAY, [5, 5])
    bad = tmp_path / f"day={DAY}" / "part-00001.parquet"
    pq.write_table(rows_table(5, 5).drop_columns(["x"]), bad)
    reader = DayReader(SPEC, tmp_path, 4, rank=0, world_size=2)  # rank 0 does not read it
    with pytest.raises(DataError, match=rf"{bad}: column 'x' \(feature 'x'\) is missing"):
        reader.iter_day(DAY)
    pq.write_table(rows_table(5, 5).set_column(4, "y", pa.array(["a"] * 5)), bad)
    with pytest.raises(DataError, match=rf"{bad}: column 'y' \(event label\) has type string"):
        reader.iter_day(DAY)


def test_unreadable_file_is_an_error_naming_it(tmp_path: Path) -> None:
    write_day(tmp_path, DAY, [5])
    bad = tmp_path / f"day={DAY}" / "part-00009.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=rf"{bad}: cannot be read as Parquet"):
        DayReader(SPEC, tmp_path, 4).iter_day(DAY)


def test_errors_in_the_background_thread_reach_the_consumer(tmp_path: Path) -> None:
    spec = FeatureSpec.model_validate(
        {**SPEC.model_dump(), "features": [
            {"name": "rid", "group": "user", "kind": "sparse", "vocab_size": 12, "oov": "error"},
            {"name": "x", "group": "item", "kind": "dense"},
        ]}
    )
    write_day(tmp_path, DAY, [8, 8])  # ids 12.. in the second file are outside the vocab
    before = prefetch_threads()
    it = DayReader(spec, tmp_path, 4, prefetch=2).iter_day(DAY)
    got = []
    with pytest.raises(DataError, match=r"part-00001\.parquet: column 'rid' .* outside \[0, 12\)"):
        for batch in it:
            got.append(batch.size)
    assert got == [4, 4, 4]  # the good batches before the failing one all arrived
    assert prefetch_threads() == before


def test_reads_generated_synthetic_days(tmp_path: Path) -> None:
    """The shipped synthetic spec reads the generator's output without drops or fills."""
    from recsys_matta.data.synthetic import generate
    from recsys_matta.specs import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "feature_specs" / "synthetic.yaml")
    generate(out=tmp_path, days=1, rows_per_day=3000, seed=0, start_date=date(2026, 1, 1),
             progress=False)
    reader = DayReader(spec, tmp_path, 1024, world_size=2, rank=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        batches = list(reader.iter_day("2026-01-01"))
    assert [b.size for b in batches] == [750, 750]
    assert batches[0].sparse.keys() == spec.sparse_names
    assert batches[0].dense.shape == (750, len(spec.dense))
    c = reader.counts("2026-01-01")
    assert c.rows_kept == 1500 and c.as_dict()["dense_filled"] == 0
    assert c.as_dict()["sparse_oov"] == 0 and c.label_null_dropped == 0


def test_column_kinds_ignore_widths_but_not_int_vs_string_ids(tmp_path: Path) -> None:
    write_day(tmp_path, DAY, [5])
    other = tmp_path / f"day={DAY}" / "part-00001.parquet"
    t = rows_table(5, 5)
    t = t.set_column(0, "rid", pa.array(range(5, 10), pa.int32())).set_column(4, "y", pa.array([0.0, 1.0] * 2 + [0.0]))
    pq.write_table(t, other)  # int32 ids, float event label: same kinds as int64 / int8
    reader = DayReader(SPEC, tmp_path, 4)
    assert reader.column_kinds(DAY) == {"rid": "integer", "tags": "list<integer>", "x": "number", "t": "number", "y": "number"}
    pq.write_table(t.set_column(0, "rid", pa.array([str(i) for i in range(5)])), other)
    with pytest.raises(DataError, match=rf"column 'rid' is integer in .*part-00000.parquet but string in {other}"):
        reader.column_kinds(DAY)
