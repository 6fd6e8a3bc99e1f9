"""The gate's scoring path reads a day as training does: the same files, the same rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys_matta.data.partitions import day_files, parquet_files
from recsys_matta.data.reader import DayReader
from recsys_matta.jobs.scoring import raw_frames, score_pyfunc
from recsys_matta.specs.config import resolve_config
from tests.tiny import DAYS


class _Half:
    """A stand-in pyfunc: checks it gets raw feature columns only, scores every row 0.5."""

    def __init__(self, spec):
        self.columns = {f.source for f in spec.features}
        self.rows = 0

    def predict(self, df):
        assert set(df.columns) <= self.columns
        self.rows += len(df)
        return np.full(len(df), 0.5)


def _messy_day(spec, synthetic_root, root):
    """Day 1 with invalid labels of both kinds and files the reader must not read."""
    src = sorted((synthetic_root / f"day={DAYS[0]}").glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in src])
    n = t.num_rows
    teacher = t["teacher_prob"].combine_chunks()
    click = t["click"].combine_chunks()
    idx = np.arange(n)
    teacher = pc.if_else(pa.array(idx % 10 == 0), pa.nulls(n, teacher.type), teacher)  # null Teacher
    click = pc.if_else(pa.array(idx % 7 == 0), pa.scalar(0.5, click.type) if pa.types.is_floating(click.type) else pa.scalar(2, click.type), click)
    t = t.set_column(t.schema.get_field_index("teacher_prob"), "teacher_prob", teacher)
    t = t.set_column(t.schema.get_field_index("click"), "click", click)
    folder = root / f"day={DAYS[0]}"
    folder.mkdir(parents=True)
    pq.write_table(t, folder / "part-00000.parquet")
    pq.write_table(t.slice(0, 100), folder / "_in-progress.parquet")  # not part of the day
    pq.write_table(t.slice(0, 100), folder / ".hidden.parquet")
    (folder / "_SUCCESS").write_text("")
    return n


@pytest.mark.parametrize("eval_label", ["event", "teacher"])
def test_gate_scoring_keeps_exactly_the_rows_training_keeps(spec, synthetic_root, tmp_path, eval_label):
    n = _messy_day(spec, synthetic_root, tmp_path)
    assert [p.name for p in day_files(tmp_path, spec.partition, DAYS[0])] == ["part-00000.parquet"]
    assert parquet_files(tmp_path / "nope") == []
    kept = DayReader(spec, tmp_path, 256).label_counts(DAYS[0]).rows_kept
    assert 0 < kept < n
    model = _Half(spec)
    cfg = resolve_config(overrides=[f"train.eval_label={eval_label}"])
    assert cfg.eval_label == eval_label
    metrics = score_pyfunc(model, spec, tmp_path, DAYS[0], cfg.eval_label)
    assert metrics.rows == model.rows == kept
    assert sum(len(df) for df in raw_frames(spec, tmp_path, DAYS[0])) == n  # hidden files skipped


def test_the_eval_label_rule_lives_on_the_run_config():
    assert resolve_config().eval_label == "teacher"  # auto = the training label
    assert resolve_config(overrides=["loss.label=event"]).eval_label == "event"
    assert resolve_config(overrides=["loss.label=event", "train.eval_label=teacher"]).eval_label == "teacher"
