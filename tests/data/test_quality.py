"""What a day's data must satisfy before it is trained (recsys_matta.data.quality)."""

from pathlib import Path

import pytest

from recsys_matta.data.encoded import ReadCounts
from recsys_matta.data.quality import DayDataError, check_counts, check_drift, check_has_rows
from recsys_matta.errors import DataError
from recsys_matta.specs.config import DataConfig


def test_a_day_without_rows_fails():
    check_has_rows(1, "2026-01-01", Path("d"))
    with pytest.raises(DayDataError, match=r"day 2026-01-01: no rows in d .* not marked finished"):
        check_has_rows(0, "2026-01-01", Path("d"))
    assert issubclass(DayDataError, DataError)


def test_loss_budget_names_columns_counts_and_files():
    counts = ReadCounts(
        rows_read=1000, rows_kept=980, label_null_dropped=15, label_out_of_range_dropped=5,
        label_null={"teacher_prob": 15}, label_out_of_range={"click": 5},
        dropped_by_file={"a.parquet": 4, "b.parquet": 16},
    )  # fmt: skip
    check_counts(counts, "2026-01-01", DataConfig(max_invalid_fraction=0.02))  # 2.0% is allowed
    with pytest.raises(DayDataError) as e:
        check_counts(counts, "2026-01-01", DataConfig(max_invalid_fraction=0.01))
    msg = str(e.value)
    assert "20 of 1000 rows (2.0%)" in msg and "max_invalid_fraction=0.01" in msg
    assert "column 'click': 0 null, 5 out of range" in msg and "column 'teacher_prob': 15 null, 0 out of range" in msg
    assert msg.index("b.parquet: 16 rows") < msg.index("a.parquet: 4 rows")  # worst file first
    with pytest.raises(DayDataError, match="0 usable rows of 20 read"):
        check_counts(ReadCounts(rows_read=20, rows_kept=0), "d", DataConfig(max_invalid_fraction=1.0))


def test_column_kind_drift():
    recorded = {"day": "2026-01-01", "columns": {"user_id": "integer", "price": "number"}}
    check_drift(None, {"user_id": "string"}, "2026-01-02")  # nothing recorded yet
    check_drift(recorded, {"user_id": "integer", "price": "number", "new": "string"}, "2026-01-02")
    with pytest.raises(DayDataError, match=r"column 'user_id' was integer on 2026-01-01, is string on 2026-01-02"):
        check_drift(recorded, {"user_id": "string", "price": "number"}, "2026-01-02")
