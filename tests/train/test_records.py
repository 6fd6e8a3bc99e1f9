"""The typed per-day record and its one reader / writer of metrics.jsonl."""

import json
import math

import pytest

from recsys_matta.errors import DataError
from recsys_matta.train.records import read_records, write_records
from tests.records import day_record, metrics


def test_round_trip_keeps_every_field_and_nan(tmp_path):
    recs = [
        day_record("2026-01-01", 0, ta=metrics(0.2, 0.4), student_rel_improvement=-0.1, loss={"total": 1.5},
                   reader={"rows_read": 7}, seconds={"eval": 0.5}),  # fmt: skip
        day_record("2026-01-02", 1, student=metrics(math.nan)),
    ]
    path = tmp_path / "metrics.jsonl"
    write_records(path, recs)
    back = read_records(path)
    assert back[0] == recs[0]
    assert math.isnan(back[1].student.auc_loss) and back[1].day == "2026-01-02"
    line = json.loads(path.read_text().splitlines()[0])
    assert "baseline" not in line and "ta_rel_improvement" not in line  # absent, not null
    assert read_records(tmp_path) == back  # a run directory works too
    assert read_records(tmp_path / "nowhere") == []


def test_typed_accessors():
    r = day_record("2026-01-01", ta=metrics(0.25), ta_rel_improvement=0.5)
    assert r.auc_loss("ta") == 0.25 and math.isnan(r.auc_loss("baseline"))
    assert r.rel_improvement("ta") == 0.5 and r.rel_improvement("student") is None
    with pytest.raises(KeyError, match="unknown model 'teacher'"):
        r.metrics_of("teacher")


def test_a_bad_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(day_record("2026-01-01").to_json() + "\n" + json.dumps({"day": "2026-01-02"}) + "\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:2: not a valid day record"):
        read_records(path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match=r"metrics.jsonl:1: "):
        read_records(path)
