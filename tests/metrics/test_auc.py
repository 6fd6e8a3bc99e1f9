import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from recsys_matta.metrics import PredictionBuffer, log_loss, model_metrics, rel_improvement, weighted_auc


def _pairwise_auc(pred, y):
    """Brute force: sum over (positive-weight i, negative-weight j) of w+_i w-_j [s_i > s_j]
    (ties count 1/2), normalised."""
    num = den = 0.0
    for i in range(len(y)):
        for j in range(len(y)):
            w = y[i] * (1 - y[j])
            if w == 0:
                continue
            den += w
            num += w * (1.0 if pred[i] > pred[j] else 0.5 if pred[i] == pred[j] else 0.0)
    return num / den


def test_hand_checked_binary_auc():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs won 3 of 4
    assert weighted_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75


def test_binary_labels_equal_plain_auroc():
    rng = np.random.default_rng(0)
    pred = rng.random(500)
    y = (rng.random(500) < pred).astype(float)
    assert weighted_auc(pred, y) == pytest.approx(roc_auc_score(y, pred), abs=1e-12)


def test_soft_labels_equal_pairwise_definition_with_ties():
    rng = np.random.default_rng(1)
    pred = np.round(rng.random(60), 1)  # many ties
    y = rng.random(60)
    assert weighted_auc(pred, y) == pytest.approx(_pairwise_auc(pred, y), abs=1e-12)


def test_soft_labels_equal_sklearn_with_sample_weights():
    rng = np.random.default_rng(2)
    pred, y = rng.random(300), rng.random(300)
    expected = roc_auc_score(
        np.r_[np.ones(300), np.zeros(300)], np.r_[pred, pred], sample_weight=np.r_[y, 1 - y]
    )
    assert weighted_auc(pred, y) == pytest.approx(expected, abs=1e-12)


def test_soft_hand_checked_value():
    # one example y=0.75 scored 0.9, one y=0.25 scored 0.1:
    # pos weights (.75,.25), neg weights (.25,.75); won pairs .75*.75, lost .25*.25, ties (same ex)
    # count 1/2: .75*.25*.5 + .25*.75*.5 = .1875; total = 1.0 -> .5625 + .1875 = .75
    assert weighted_auc(np.array([0.9, 0.1]), np.array([0.75, 0.25])) == pytest.approx(0.75)


def test_degenerate_labels_give_nan():
    assert math.isnan(weighted_auc(np.array([0.1, 0.2]), np.array([1.0, 1.0])))
    assert math.isnan(weighted_auc(np.array([0.1, np.nan]), np.array([1.0, 0.0])))


def test_log_loss_calibration_and_rel_improvement():
    m = model_metrics(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    assert m.log_loss == pytest.approx(math.log(2))
    assert m.calibration == pytest.approx(1.0)
    assert m.auc_loss == pytest.approx(0.5)
    assert log_loss(np.array([0.2]), np.array([0.2])) == pytest.approx(-(0.2 * math.log(0.2) + 0.8 * math.log(0.8)))
    assert rel_improvement(0.18, 0.20) == pytest.approx(-0.1)
    assert math.isnan(rel_improvement(0.1, 0.0))


def test_prediction_buffer_concatenates_in_order():
    buf = PredictionBuffer(["p", "y"])
    buf.add(p=torch.tensor([0.1, 0.2]), y=torch.tensor([0.0, 1.0]))
    buf.add(p=torch.tensor([[0.3]]), y=torch.tensor([1.0]))
    out = buf.gather()
    np.testing.assert_allclose(out["p"], [0.1, 0.2, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(out["y"], [0.0, 1.0, 1.0])
