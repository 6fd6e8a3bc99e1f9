"""Teacher featurizers on a hand-checkable encoded table."""

import math

import numpy as np
import pyarrow as pa
import pytest

from recsys_matta.data.encode import encode_table
from recsys_matta.specs import FeatureSpec
from recsys_matta.teacher.features import OneHotFeaturizer, TargetFeaturizer, feature_bags

SPEC = FeatureSpec.model_validate({
    "name": "tiny",
    "labels": {"event": "click"},
    "features": [
        {"name": "u", "group": "user", "kind": "sparse", "vocab_size": 300},  # > 255 rows: statistics
        {"name": "h", "group": "context", "kind": "sparse", "vocab_size": 4},  # categorical code
        {"name": "tags", "group": "item", "kind": "sparse", "vocab_size": 10, "multi_valued": True},
        {"name": "x", "group": "item", "kind": "dense"},
    ],
})  # fmt: skip
TABLE = pa.table({
    "u": pa.array([1, 1, 2, None], pa.int64()),
    "h": pa.array([0, 1, 2, 3], pa.int64()),
    "tags": pa.array([[1], [1, 2], [], [2, 2]], pa.list_(pa.int64())),
    "x": pa.array([0.5, -1.0, 2.0, 0.0], pa.float64()),
    "click": pa.array([1, 0, 1, 1], pa.int8()),
})  # fmt: skip


def _enc():
    return encode_table(SPEC, TABLE, "test")


def test_feature_bags_split_the_kjt_layout():
    bags = feature_bags(_enc())
    assert [b[0].tolist() for b in bags] == [[1, 1, 2], [0, 1, 2, 3], [1, 1, 2, 2, 2]]
    assert [b[1].tolist() for b in bags] == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 2, 0, 2]]


def test_target_statistics_with_all_rows():
    enc = _enc()
    feat = TargetFeaturizer(SPEC, smoothing=0.0)
    feat.fit_transform(enc, enc.event)
    assert feat.columns == ["u:target_mean", "u:log_count", "h", "tags:target_mean", "tags:log_count", "tags:length", "x"]
    assert feat.categorical_mask.tolist() == [False, False, True, False, False, False, False]
    x = feat.transform(enc)
    nan = math.nan
    # u=1 on rows 0,1 (labels 1,0) -> 0.5; u=2 on row 2 -> 1.0; row 3 has no id
    np.testing.assert_allclose(x[:, 0], [0.5, 0.5, 1.0, nan])
    np.testing.assert_allclose(x[:, 1], np.log1p([2, 2, 1, nan]), rtol=1e-6)
    np.testing.assert_array_equal(x[:, 2], [0, 1, 2, 3])
    # tag 1 on rows 0,1 -> 1/2; tag 2 on rows 1,3,3 -> 2/3; bag means, an empty bag is NaN
    np.testing.assert_allclose(x[:, 3], [0.5, (0.5 + 2 / 3) / 2, nan, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(x[:, 4], [np.log1p(2), (np.log1p(2) + np.log1p(3)) / 2, nan, np.log1p(3)], rtol=1e-6)
    np.testing.assert_array_equal(x[:, 5], [1, 2, 0, 2])
    np.testing.assert_allclose(x[:, 6], [0.5, -1.0, 2.0, 0.0])


def test_fit_rows_get_out_of_fold_statistics():
    enc = _enc()
    y = enc.event.astype(np.float64)
    m = 2.0
    feat = TargetFeaturizer(SPEC, smoothing=m, folds=2, seed=3)
    x = feat.fit_transform(enc, y)
    fold = np.random.default_rng(3).integers(0, 2, size=4)
    prior = y.mean()
    u = [1, 1, 2, None]
    for r in range(4):  # brute force: statistics of the rows in the other folds only
        if u[r] is None:
            assert math.isnan(x[r, 0])
            continue
        others = [k for k in range(4) if fold[k] != fold[r] and u[k] == u[r]]
        expected = (sum(y[k] for k in others) + m * prior) / (len(others) + m)
        assert x[r, 0] == pytest.approx(expected, rel=1e-6)
        assert x[r, 1] == pytest.approx(np.log1p(len(others)), rel=1e-6)


def test_one_hot_matrix():
    feat = OneHotFeaturizer(SPEC)
    assert feat.offsets.tolist() == [0, 301, 306, 317] and feat.num_columns == 318  # vocab + OOV row
    x = feat.transform(_enc()).toarray()  # before fitting: the full id space
    assert x.shape == (4, 318)
    row1 = np.zeros(318)
    row1[[1, 301 + 1, 306 + 1, 306 + 2, 317]] = [1, 1, 0.5, 0.5, -1.0]
    np.testing.assert_allclose(x[1], row1)
    assert x[3, 306 + 2] == pytest.approx(1.0)  # duplicate ids of one bag add up
    assert x[3, :301].sum() == 0  # no user id


def test_one_hot_keeps_only_ids_seen_when_fitting():
    enc = _enc()
    feat = OneHotFeaturizer(SPEC)
    fit = feat.fit_transform(enc.take(np.array([0, 1])), None).toarray()
    # seen: u=1, h=0, h=1, tags 1 and 2, and the dense column -> 6 kept columns in id order
    np.testing.assert_allclose(fit, [[1, 1, 0, 1, 0, 0.5], [1, 0, 1, 0.5, 0.5, -1.0]])
    x = feat.transform(enc).toarray()  # u=2, h=2, h=3 unseen: dropped
    np.testing.assert_allclose(x[2:], [[0, 0, 0, 0, 0, 2.0], [0, 0, 0, 0, 1.0, 0.0]])
