"""Synthetic generator: layout, determinism, schema vs the spec, Teacher calibration, drift."""

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from recsys_matta.cli import app
from recsys_matta.data.partitions import list_days
from recsys_matta.data.synthetic import World, _spectrum, generate
from recsys_matta.errors import UserError
from recsys_matta.specs import load_spec

SPEC = Path(__file__).resolve().parents[2] / "feature_specs" / "synthetic.yaml"
START = date(2026, 1, 1)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0)


@pytest.fixture(scope="module")
def day0(world: World) -> pa.Table:
    return world.events(day=0, chunk=0, n=50_000)


def test_layout_and_row_counts(tmp_path: Path) -> None:
    written = generate(
        tmp_path, days=2, rows_per_day=2_500, seed=1, start_date=START, part_rows=1_000
    )
    assert written == [tmp_path / "day=2026-01-01", tmp_path / "day=2026-01-02"]
    assert list_days(tmp_path, load_spec(SPEC)) == ["2026-01-01", "2026-01-02"]
    for d in written:
        parts = sorted(p.name for p in d.iterdir())
        assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
        assert [pq.ParquetFile(d / p).metadata.num_rows for p in parts] == [1_000, 1_000, 500]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    args = dict(days=2, rows_per_day=1_500, start_date=START, part_rows=1_000)
    generate(tmp_path / "a", seed=7, **args)
    generate(tmp_path / "b", seed=7, **args)
    generate(tmp_path / "c", seed=8, **args)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 4 and a == b
    assert c.keys() == a.keys() and all(c[k] != a[k] for k in a)
    ta = pq.read_table(tmp_path / "a" / "day=2026-01-01")
    tc = pq.read_table(tmp_path / "c" / "day=2026-01-01")
    assert not np.array_equal(ta["user_id"].to_numpy(), tc["user_id"].to_numpy())
    assert not np.array_equal(ta["teacher_prob"].to_numpy(), tc["teacher_prob"].to_numpy())
    # day d does not depend on how many days follow it
    generate(tmp_path / "d", seed=7, **{**args, "days": 1})
    assert _files(tmp_path / "d") == {k: v for k, v in a.items() if k.startswith("day=2026-01-01")}


def test_same_bytes_with_any_blas_thread_count(tmp_path: Path) -> None:
    code = (
        "import sys, datetime; from recsys_matta.data.synthetic import generate; "
        "generate(sys.argv[1], 1, 60_000, 2, datetime.date(2026, 1, 1), part_rows=60_000)"
    )
    for threads in ["1", "2"]:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }
        subprocess.run([sys.executable, "-c", code, str(tmp_path / threads)], env=env, check=True)
    assert _files(tmp_path / "1") == _files(tmp_path / "2")


def test_columns_match_the_spec(day0: pa.Table) -> None:
    spec = load_spec(SPEC)
    assert set(day0.column_names) == set(spec.source_columns())
    schema = day0.schema
    for f in spec.sparse:
        t = schema.field(f.source).type
        if f.multi_valued:
            assert t == pa.list_(pa.int64()), f.name
        else:
            assert pa.types.is_integer(t), f.name
        if f.vocab_size is not None:  # vocab ids are in range (no OOV by construction)
            col = day0[f.source]
            ids = (col.combine_chunks().flatten() if f.multi_valued else col).to_numpy()
            assert ids.min() >= 0 and ids.max() < f.vocab_size, f.name
    for f in spec.dense:
        assert schema.field(f.source).type == pa.float32(), f.name
    assert schema.field("user_id").type == schema.field("item_id").type == pa.int64()
    assert schema.field("teacher_prob").type == pa.float32()
    assert set(day0["click"].to_numpy().tolist()) == {0, 1}
    for col, k_max in [("user_interests", 6), ("item_tags", 5)]:
        lengths = np.array([len(x) for x in day0[col].to_pylist()[:2_000]])
        assert lengths.min() == 1 and lengths.max() == k_max


def test_dense_spec_stats_match_the_data(day0: pa.Table) -> None:
    """The spec's normalisation numbers are close to the generated day-0 distribution."""
    spec = load_spec(SPEC)
    for f in spec.dense:
        x = day0[f.source].to_numpy().astype(np.float64)
        x = np.log1p(np.maximum(x, 0)) if f.transform == "log1p" else x
        z = (x - f.mean) / f.std
        assert abs(z.mean()) < 0.6 and 0.4 < z.std() < 1.6, f.name


def test_teacher_prob_has_spread_and_calibrated_levels(day0: pa.Table) -> None:
    p = day0["teacher_prob"].to_numpy()
    click = day0["click"].to_numpy()
    assert p.min() > 0.0 and p.max() < 1.0
    assert p.std() > 0.08
    q10, q50, q90 = np.quantile(p, [0.1, 0.5, 0.9])
    assert q90 / q10 > 20 and 0.01 < q50 < 0.15
    assert 0.05 < click.mean() < 0.2  # CTR: a few percent to ~20%
    assert 0.75 < roc_auc_score(click, p) < 0.85  # informative, far from perfect
    assert abs(p.mean() - click.mean()) < 0.01  # the Teacher is calibrated


def test_zipf_users_and_items(day0: pa.Table) -> None:
    for col, n_min in [("user_id", 5_000), ("item_id", 3_000)]:
        _, counts = np.unique(day0[col].to_numpy(), return_counts=True)
        counts = np.sort(counts)[::-1]
        assert len(counts) > n_min, col  # many distinct ids
        assert counts[:10].sum() / counts.sum() > 0.05, col  # a heavy head ...
        assert (counts == 1).sum() > 500, col  # ... and a long tail


def test_catalogue_grows_and_popularity_drifts(world: World, day0: pa.Table) -> None:
    old_items = world.items.ids[: world.cfg.n_items]
    same_day = world.events(day=0, chunk=1, n=50_000)
    day3 = world.events(day=3, chunk=0, n=50_000)
    assert len(world.items.ids) == world.cfg.n_items + 3 * world.cfg.new_items_per_day
    new = ~np.isin(day3["item_id"].to_numpy(), old_items)
    assert 0.05 < new.mean() < 0.5  # new items are shown, old ones still dominate

    def freq(t: pa.Table) -> np.ndarray:  # (I,) share of each day-0 item among day-0 items
        ids = t["item_id"].to_numpy()
        ids = ids[np.isin(ids, old_items)]
        return np.bincount(np.searchsorted(old_items, ids), minlength=len(old_items)) / len(ids)

    assert np.all(np.diff(old_items) > 0)  # searchsorted needs sorted ids
    noise = 0.5 * np.abs(freq(day0) - freq(same_day)).sum()
    drift = 0.5 * np.abs(freq(day0) - freq(day3)).sum()
    assert drift > 1.5 * noise


def test_latent_spectrum_rewards_capacity() -> None:
    """Share of the Teacher's id x id interaction a rank-k model can represent (iid factors)."""
    s = _spectrum(48) ** 4
    share = np.cumsum(s) / s.sum()
    assert 0.5 < share[15] < 0.65  # rank 16 (the Student) captures about half
    assert share[31] > share[15] + 0.2  # rank 32 (a 2x TA) captures much more


def test_negative_seed_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--seed -1: expected a non-negative integer"):
        generate(tmp_path, days=1, rows_per_day=10, seed=-1, start_date=START)


def test_cli_generate(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    args = [
        "generate",
        "--out",
        str(out),
        "--days",
        "2",
        "--rows-per-day",
        "300",
        "--seed",
        "3",
        "--start-date",
        "2026-02-27",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 2 days x 300 rows" in result.output
    assert list_days(out, load_spec(SPEC)) == ["2026-02-27", "2026-02-28"]
    assert pq.read_table(out / "day=2026-02-28").num_rows == 300
