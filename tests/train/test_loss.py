import math

import pytest
import torch

from recsys_matta.specs.config import LossConfig
from recsys_matta.train.loss import distill_ramp, matta_loss


def _bce(p: float, y: float) -> float:
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_loss_terms_match_hand_computed_values():
    logit_s = torch.tensor([0.0, 2.0])
    logit_ta = torch.tensor([1.0, -1.0])
    y = torch.tensor([1.0, 0.25])
    cfg = LossConfig(w_student=0.5, w_ta=2.0, w_distill=3.0, distill_delay=0, distill_ramp=0)
    t = matta_loss(logit_s, logit_ta, y, step=5, cfg=cfg)
    l_s = (_bce(0.5, 1.0) + _bce(_sig(2.0), 0.25)) / 2
    l_ta = (_bce(_sig(1.0), 1.0) + _bce(_sig(-1.0), 0.25)) / 2
    l_d = (_bce(0.5, _sig(1.0)) + _bce(_sig(2.0), _sig(-1.0))) / 2
    assert float(t.student) == pytest.approx(l_s, rel=1e-6)
    assert float(t.ta) == pytest.approx(l_ta, rel=1e-6)
    assert float(t.distill) == pytest.approx(l_d, rel=1e-6)
    assert float(t.total) == pytest.approx(0.5 * l_s + 2.0 * l_ta + 3.0 * l_d, rel=1e-6)
    assert float(t.detached()["loss/distill_ramp"]) == 1.0


def test_loss_is_stable_for_extreme_logits():
    t = matta_loss(torch.tensor([80.0, -80.0]), torch.tensor([-90.0, 90.0]), torch.tensor([0.0, 1.0]), 0, LossConfig())
    assert torch.isfinite(t.total)
    assert float(t.student) == pytest.approx(80.0, rel=1e-4)


def test_student_only_loss_has_no_ta_or_distill_term():
    t = matta_loss(torch.tensor([0.0]), None, torch.tensor([1.0]), 0, LossConfig(w_student=2.0))
    assert t.ta is None and t.distill is None
    assert float(t.total) == pytest.approx(2 * math.log(2), rel=1e-6)
    assert set(t.detached()) == {"loss/total", "loss/student"}


@pytest.mark.parametrize(
    "step,expected", [(0, 0.0), (9, 0.0), (10, 0.0), (15, 0.25), (20, 0.5), (30, 1.0), (1000, 1.0)]
)
def test_ramp_schedule(step, expected):
    assert distill_ramp(step, delay=10, ramp=20) == pytest.approx(expected)


def test_ramp_without_ramp_steps_jumps_at_delay():
    assert distill_ramp(4, 5, 0) == 0.0
    assert distill_ramp(5, 5, 0) == 1.0


def test_distill_term_off_during_delay_and_no_gradient_to_ta():
    logit_s = torch.tensor([0.3, -0.2], requires_grad=True)
    logit_ta = torch.tensor([1.0, -1.0], requires_grad=True)
    y = torch.tensor([1.0, 0.0])
    cfg = LossConfig(w_student=0.0, w_ta=0.0, w_distill=1.0, distill_delay=3, distill_ramp=0)
    assert matta_loss(logit_s, logit_ta, y, 2, cfg).total.item() == 0.0
    matta_loss(logit_s, logit_ta, y, 3, cfg).total.backward()
    assert logit_ta.grad is None or torch.count_nonzero(logit_ta.grad) == 0
    assert torch.count_nonzero(logit_s.grad) == 2


def test_baseline_loss_is_plain_bce():
    from recsys_matta.train.loss import baseline_loss

    got = baseline_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.25]))
    assert float(got) == pytest.approx((_bce(0.5, 1.0) + _bce(_sig(2.0), 0.25)) / 2, rel=1e-6)
