"""`matta teacher fit|score` on tiny MovieLens-shaped days: a planted per-user click rate, and a
slice of the shipped ml-latest-small converted by the real adapter."""

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_matta.data.encode import encode_table
from recsys_matta.data.partitions import day_dir, write_partitions
from recsys_matta.data.reader import DayReader
from recsys_matta.errors import UserError
from recsys_matta.specs import load_spec
from recsys_matta.teacher.fit import MODEL_FILE, REPORT_FILE, TeacherConfig, fit_teacher, load_teacher, score_teacher
from tests.shared_data import SHARED_DATA, needs_shared_data

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "feature_specs" / "movielens.yaml"
ML_SMALL = SHARED_DATA / "ml-latest-small"
DAYS = ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]


def _day(seed: int, n: int = 500) -> pa.Table:
    """MovieLens-shaped rows; even users click 85% of the time, odd users 15%."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 40, n)
    p = np.where(user % 2 == 0, 0.85, 0.15)
    genres = [["Drama"], ["Comedy", "Drama"], []]
    return pa.table({
        "user_id": pa.array(user, pa.int64()),
        "hour": pa.array(rng.integers(0, 24, n), pa.int32()),
        "weekday": pa.array(rng.integers(0, 7, n), pa.int32()),
        "movie_id": pa.array(rng.integers(1, 200, n), pa.int64()),
        "genres": pa.array([genres[i % 3] for i in range(n)], pa.list_(pa.string())),
        "year": pa.array(rng.integers(1980, 2020, n), pa.int32()),
        "tags": pa.array([["fun"] if i % 4 == 0 else [] for i in range(n)], pa.list_(pa.string())),
        "click": pa.array((rng.random(n) < p).astype(np.int8)),
        "rating": pa.array(rng.random(n).astype(np.float32) * 5),
        "timestamp": pa.array(np.arange(n, dtype=np.int64)),
    })  # fmt: skip


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    write_partitions(root, load_spec(SPEC_PATH), [(d, [_day(i)]) for i, d in enumerate(DAYS)])
    return root


def test_fit_picks_the_better_candidate_and_score_writes_new_partitions(planted, tmp_path):
    before = _hashes(planted)
    model_dir, new_root = tmp_path / "teacher", tmp_path / "scored"
    rep = fit_teacher(SPEC_PATH, planted, f"{DAYS[0]}..{DAYS[2]}", model_dir, TeacherConfig(hgb_max_iter=50))
    assert (model_dir / MODEL_FILE).is_file()
    assert json.loads((model_dir / REPORT_FILE).read_text()) == rep
    assert rep["train_days"] == DAYS[:2] and rep["holdout_days"] == [DAYS[2]] and rep["fit_days"] == DAYS[:3]
    losses = {k: v["holdout_auc_loss"] for k, v in rep["candidates"].items()}
    assert set(losses) == {"hgb", "logreg"}
    assert rep["chosen"] == min(losses, key=losses.get)
    assert losses[rep["chosen"]] < 0.35  # the per-user click rate is learnt (random: 0.5)
    assert rep["rows"] == {"train": 1000, "holdout": 500}

    with pytest.raises(UserError, match="were used to fit"):
        score_teacher(model_dir, SPEC_PATH, planted, DAYS[2], new_root)
    with pytest.raises(UserError, match="source root"):
        score_teacher(model_dir, SPEC_PATH, planted, DAYS[3], planted)
    summary = score_teacher(model_dir, SPEC_PATH, planted, DAYS[3], new_root)
    assert summary["rows"] == {DAYS[3]: 500}
    assert _hashes(planted) == before  # the source is only read

    src = pq.read_table(day_dir(planted, load_spec(SPEC_PATH), DAYS[3]) / "part-00000.parquet")
    new = pq.read_table(day_dir(new_root, load_spec(SPEC_PATH), DAYS[3]) / "part-00000.parquet")
    assert new.column_names == src.column_names + ["teacher_prob"]
    assert new.schema.field("teacher_prob").type == pa.float32()
    assert new.drop_columns(["teacher_prob"]).equals(src)
    prob = new["teacher_prob"].to_numpy()
    assert ((prob > 0) & (prob < 1)).all()
    teacher, _ = load_teacher(model_dir)
    np.testing.assert_array_equal(prob, teacher.predict(encode_table(load_spec(SPEC_PATH), src, "src", labels=False)))

    spec2 = load_spec(new_root / "spec.yaml")
    assert spec2.labels.teacher == "teacher_prob" and spec2.labels.event == "click"
    assert spec2.features == load_spec(SPEC_PATH).features
    batch = next(DayReader(spec2, new_root, 1000).iter_day(DAYS[3]))
    np.testing.assert_array_equal(batch.teacher.numpy(), prob)
    assert DayReader(spec2, new_root, 1).days() == [DAYS[3]]


@needs_shared_data
def test_real_movielens_slice(tmp_path):
    """Months 2000-05..2000-08 of ml-latest-small (4737 ratings) through the real adapter."""
    import polars as pl

    from recsys_matta.data.adapters.movielens import convert

    src = tmp_path / "ml"
    src.mkdir()
    lo, hi = (int(dt.datetime(2000, m, 1, tzinfo=dt.timezone.utc).timestamp()) for m in (5, 9))
    ratings = pl.read_csv(ML_SMALL / "ratings.csv")
    ratings.filter((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi)).write_csv(src / "ratings.csv")
    for f in ("movies.csv", "tags.csv"):
        (src / f).write_bytes((ML_SMALL / f).read_bytes())
    root = tmp_path / "parts"
    months = convert(src, root, period="month")
    assert months == ["2000-05-01", "2000-06-01", "2000-07-01", "2000-08-01"]
    before = _hashes(root)
    rep = fit_teacher(SPEC_PATH, root, "2000-05-01..2000-07-01", tmp_path / "t", TeacherConfig(hgb_max_iter=50))
    assert rep["rows"] == {"train": 157 + 1180, "holdout": 1081}
    assert all(0 < c["holdout_auc_loss"] < 1 for c in rep["candidates"].values())
    out = score_teacher(tmp_path / "t", SPEC_PATH, root, "2000-08-01", tmp_path / "scored")
    assert out["rows"] == {"2000-08-01": 2319}
    assert _hashes(root) == before
    spec2 = load_spec(tmp_path / "scored" / "spec.yaml")
    y = np.concatenate([b.teacher.numpy() for b in DayReader(spec2, tmp_path / "scored", 4096).iter_day("2000-08-01")])
    assert len(y) == 2319 and ((y > 0) & (y < 1)).all()
