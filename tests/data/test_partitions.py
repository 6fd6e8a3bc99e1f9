"""Partition naming, listing and atomic writing (recsys_matta.data.partitions)."""

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_matta.data.partitions import (
    day_dir,
    day_writer,
    format_day,
    list_days,
    parse_day,
    staged_output,
    write_parquet,
    write_partitions,
)
from recsys_matta.errors import DataError
from recsys_matta.specs import Partition

DAY = Partition()  # day=%Y-%m-%d
EU = Partition(column="dt", format="%d.%m.%Y")  # lexical order != chronological order


def _table(values: list[int]) -> pa.Table:
    return pa.table({"x": pa.array(values, pa.int64())})


def _hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_day_dir_and_parse_day() -> None:
    assert day_dir(Path("/r"), DAY, date(2026, 1, 2)) == Path("/r/day=2026-01-02")
    assert day_dir(Path("/r"), DAY, "2026-01-02") == Path("/r/day=2026-01-02")
    assert day_dir(Path("/r"), EU, date(2026, 3, 1)) == Path("/r/dt=01.03.2026")
    assert parse_day("01.03.2026", EU) == date(2026, 3, 1)
    assert format_day(date(2026, 12, 31), DAY) == "2026-12-31"
    with pytest.raises(
        DataError, match=r"partition value '2026/01/02' does not match the format '%Y-%m-%d'"
    ):
        day_dir(Path("/r"), DAY, "2026/01/02")


def test_list_days_sorts_chronologically_and_skips_hidden(tmp_path: Path) -> None:
    for name in ["dt=02.01.2026", "dt=31.12.2025", "dt=10.01.2026", ".tmp-dt=11.01.2026-1-0"]:
        (tmp_path / name).mkdir()
    (tmp_path / "dt=notes.txt").write_text("a file, not a day")
    (tmp_path / "other=1").mkdir()
    assert list_days(tmp_path, EU) == ["31.12.2025", "02.01.2026", "10.01.2026"]


def test_list_days_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"{tmp_path / 'nope'}: partition root not found"):
        list_days(tmp_path / "nope", DAY)
    (tmp_path / "day=yesterday").mkdir()
    with pytest.raises(
        DataError, match=r"day=yesterday: partition value 'yesterday' does not match"
    ):
        list_days(tmp_path, DAY)


def test_write_partitions_splits_parts_and_round_trips(tmp_path: Path) -> None:
    days = [("2026-01-02", [_table([1, 2, 3]), _table([4, 5])]), (date(2026, 1, 1), [_table([9])])]
    written = write_partitions(tmp_path, DAY, days, part_rows=2)
    assert written == [tmp_path / "day=2026-01-02", tmp_path / "day=2026-01-01"]
    assert list_days(tmp_path, DAY) == ["2026-01-01", "2026-01-02"]
    parts = sorted(p.name for p in (tmp_path / "day=2026-01-02").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    rows = [pq.read_table(tmp_path / "day=2026-01-02" / p)["x"].to_pylist() for p in parts]
    assert rows == [[1, 2], [3, 4], [5]]  # buffered: parts of exactly part_rows rows, in order
    assert _hidden(tmp_path) == []


def test_write_parquet_is_byte_stable(tmp_path: Path) -> None:
    t = pa.table({"a": [1, 2, 3], "b": [[1], [], [2, 3]], "c": ["x", None, "z"]})
    write_parquet(t, tmp_path / "1.parquet")
    write_parquet(t, tmp_path / "2.parquet")
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()


def test_failed_day_leaves_nothing_and_keeps_the_old_day(tmp_path: Path) -> None:
    write_partitions(tmp_path, DAY, [("2026-01-01", [_table([1])])])
    with pytest.raises(RuntimeError, match="boom"):
        with day_writer(tmp_path, DAY, "2026-01-01", part_rows=1) as w:
            w.write(_table([7, 8]))
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with day_writer(tmp_path, DAY, "2026-01-02") as w:
            raise RuntimeError("boom")
    assert list_days(tmp_path, DAY) == ["2026-01-01"]
    assert pq.read_table(tmp_path / "day=2026-01-01")["x"].to_pylist() == [1]
    assert _hidden(tmp_path) == []
    # a successful rewrite replaces the day as a whole
    write_partitions(tmp_path, DAY, [("2026-01-01", [_table([5, 6])])])
    assert pq.read_table(tmp_path / "day=2026-01-01")["x"].to_pylist() == [5, 6]
    assert _hidden(tmp_path) == []


def test_staged_output_publishes_all_days_or_none(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="late failure"):
        with staged_output(tmp_path, DAY) as out:
            out.day("2026-01-01").write(_table([1]))
            out.day("2026-01-02").write(_table([2]))
            raise RuntimeError("late failure")
    assert list(tmp_path.iterdir()) == []
    write_partitions(tmp_path, DAY, [("2025-12-31", [_table([0])]), ("2026-01-01", [_table([0])])])
    with staged_output(tmp_path, DAY, replace_all=True) as out:
        out.day(date(2026, 1, 2)).write(_table([2]))
        out.day("2026-01-01").write(_table([1]))
        out.day("2026-01-01").write(_table([11]))
    assert list_days(tmp_path, DAY) == ["2026-01-01", "2026-01-02"]  # 2025-12-31 was stale
    assert pq.read_table(tmp_path / "day=2026-01-01")["x"].to_pylist() == [1, 11]
    assert _hidden(tmp_path) == []
