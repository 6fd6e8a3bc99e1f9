"""The one training step: TrainStep (MatTA + baseline losses) and run_steps."""

import pytest
import torch

from recsys_matta.data.reader import DayReader
from recsys_matta.distributed.engine import LocalEngine, build_models
from recsys_matta.train.loss import baseline_loss, matta_loss
from recsys_matta.train.step import NonFiniteLossError, StepOptimizers, TrainStep, run_steps
from tests.tiny import DAYS, tiny_config


@pytest.fixture
def batch(spec, synthetic_root):
    return next(iter(DayReader(spec, synthetic_root, 64).iter_day(DAYS[0])))


def test_train_step_is_the_matta_loss_plus_the_baseline_loss(spec, batch):
    cfg = tiny_config()
    models = build_models(spec, cfg, torch.device("cpu"))
    step = TrainStep(models.model, models.baseline, cfg.loss, "teacher")
    step.step = 7
    loss, terms = step(batch)
    s, t = models.model(batch)
    want = matta_loss(s, t, batch.teacher, 7, cfg.loss)
    b = baseline_loss(models.baseline(batch)[0], batch.teacher)
    assert loss.shape == (1,) and float(loss.detach()) == pytest.approx(float((want.total + b).detach()), rel=1e-6)
    assert float(terms["loss/baseline"]) == pytest.approx(float(b), rel=1e-6)
    assert float(terms["loss/distill_ramp"]) == pytest.approx(want.ramp)
    assert step.step == 8 and not terms["loss/total"].requires_grad


def test_run_steps_stops_before_a_non_finite_backward(spec, batch):
    cfg = tiny_config()
    models = build_models(spec, cfg, torch.device("cpu"))
    engine = LocalEngine(models, cfg, "teacher", torch.device("cpu"))
    before = {k: v.clone() for k, v in models.model.state_dict().items()}
    batch.teacher[0] = float("nan")
    alone = TrainStep(models.model, None, cfg.loss, "teacher")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss on day D at step 0 \(\{'loss/total': nan"):
        list(run_steps(alone, StepOptimizers([engine.opt]), [batch], torch.device("cpu"), "D"))
    with pytest.raises(NonFiniteLossError, match="on day D at step 3"):
        list(engine.train([batch], 3, "D"))
    after = models.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no weight saw the NaN


def test_local_engine_trains_both_models_with_their_own_optimizers(spec, batch):
    cfg = tiny_config("baseline.optim.lr=0.02")
    assert cfg.baseline.optim.dense == "adam" and cfg.baseline.optim.betas == (0.9, 0.999)
    models = build_models(spec, cfg, torch.device("cpu"))
    engine = LocalEngine(models, cfg, "teacher", torch.device("cpu"))
    group = engine.baseline_opt.dense.param_groups[0]
    assert (group["lr"], group["betas"]) == (0.02, (0.9, 0.999))  # nothing inherited from `optim`
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (models.model, models.baseline)]
    (res,) = list(engine.train([batch], 0, DAYS[0]))
    assert res.rows == batch.size and {"loss/total", "loss/ta", "loss/baseline"} <= set(res.terms)
    for m, b in zip((models.model, models.baseline), before):
        assert any(not torch.equal(v, b[k]) for k, v in m.state_dict().items())
