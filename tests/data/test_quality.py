"""What a day's data must satisfy before it is trained (recsys_matta.data.quality)."""

from pathlib import Path

import pytest

from recsys_matta.data.encoded import ReadCounts
from recsys_matta.data.quality import DayDataError, check_counts, check_drift, check_has_rows, check_ids
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


# --- the null / unknown id budget ---------------------------------------------------------------
def _day_with_nulls(synthetic_root, out_root, column, share, oov_column=None, oov_share=0.0):
    """Day 1 of the synthetic data with the first `share` of `column` set to null (and the first
    `oov_share` of `oov_column` outside its vocab), in two files."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    src = sorted((synthetic_root / "day=2026-01-01").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in src])
    n = table.num_rows
    k = int(round(share * n))
    mask = pa.array([True] * k + [False] * (n - k))
    i = table.schema.get_field_index(column)
    table = table.set_column(i, column, pc.if_else(mask, pa.nulls(n, table[column].type), table[column]))
    if oov_column:
        k = int(round(oov_share * n))
        j = table.schema.get_field_index(oov_column)
        col = table[oov_column].combine_chunks()
        big = pa.array([10_000] * k + [0] * (n - k), col.type)
        table = table.set_column(j, oov_column, pc.if_else(pc.greater(big, 0), big, col))
    folder = out_root / "day=2026-01-01"
    folder.mkdir(parents=True)
    half = n // 2
    pq.write_table(table.slice(0, half), folder / "part-00000.parquet")
    pq.write_table(table.slice(half), folder / "part-00001.parquet")
    return n


def test_a_third_of_item_id_null_fails_naming_the_feature_column_and_files(spec, synthetic_root, tmp_path):
    from recsys_matta.data.reader import DayReader

    n = _day_with_nulls(synthetic_root, tmp_path, "item_id", 1 / 3)
    counts = DayReader(spec, tmp_path, 256).id_counts("2026-01-01")
    with pytest.raises(DayDataError) as e:
        check_ids(counts, "2026-01-01", spec, DataConfig())
    msg = str(e.value)
    assert f"day 2026-01-01: feature 'item_id' (column 'item_id'): {n // 3} null or unknown ids in {n} rows" in msg
    assert "(33.3%" in msg and "above data.ids.fail=0.2" in msg and "part-00000.parquet" in msg
    # its own budget lets it through (with a warning), another feature's does not matter
    check_ids(counts, "2026-01-01", spec, DataConfig(ids_per_feature={"item_id": {"warn": 0.3, "fail": 0.5}}))
    with pytest.raises(DataError, match="data.ids_per_feature names 'nope'"):
        check_ids(counts, "2026-01-01", spec, DataConfig(ids_per_feature={"nope": {}}))


def test_a_small_share_of_null_or_unknown_ids_warns_and_passes(spec, synthetic_root, tmp_path, caplog):
    import logging

    from recsys_matta.data.reader import DayReader

    _day_with_nulls(synthetic_root, tmp_path, "user_id", 0.05, oov_column="item_category", oov_share=0.03)
    counts = DayReader(spec, tmp_path, 256).id_counts("2026-01-01")
    with caplog.at_level(logging.WARNING, logger="recsys_matta"):
        check_ids(counts, "2026-01-01", spec, DataConfig())
    msgs = sorted(r.getMessage() for r in caplog.records)
    assert len(msgs) == 2
    assert "feature 'item_category' (column 'item_category')" in msgs[0] and "outside the vocab" in msgs[0]
    assert "feature 'user_id'" in msgs[1] and "(5.0%" in msgs[1] and "above data.ids.warn=0.01" in msgs[1]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recsys_matta"):
        check_ids(counts, "2026-01-01", spec, DataConfig(ids={"warn": 0.1}))
    assert not caplog.records


def test_id_budget_config_is_validated():
    assert DataConfig().ids.warn == 0.01 and DataConfig().ids.fail == 0.2
    with pytest.raises(ValueError, match="must not exceed fail"):
        DataConfig(ids={"warn": 0.5, "fail": 0.1})


@pytest.mark.integration
def test_matta_train_fails_the_day_with_a_third_of_item_id_null(spec, synthetic_root, tmp_path, capsys):
    from recsys_matta.cli import main
    from tests.tiny import SPEC_PATH, TINY

    _day_with_nulls(synthetic_root, tmp_path / "data", "item_id", 1 / 3)
    with pytest.raises(SystemExit) as e:
        main(["train", "--spec", str(SPEC_PATH), "--data", str(tmp_path / "data"), "--workdir", str(tmp_path / "w"), *TINY])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "day 2026-01-01: feature 'item_id' (column 'item_id')" in err and "not trained" in err
    assert not list((tmp_path / "w").glob("checkpoints/*.pt"))
