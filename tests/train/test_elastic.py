"""Elastic training: the sampled sub-networks and their term in the one TrainStep."""

import pytest

from recsys_matta.data.reader import DayReader
from recsys_matta.distributed.context import DistContext
from recsys_matta.distributed.factory import make_engine
from recsys_matta.models.choice import student_choice, ta_choice, wide_narrow_wide
from recsys_matta.specs.config import ElasticConfig
from recsys_matta.specs.presets import PRESETS
from recsys_matta.train.elastic import sample_choices
from recsys_matta.train.loss import matta_loss
from recsys_matta.train.step import TrainStep
from tests.tiny import DAYS, tiny_config

CFG = PRESETS["default"]


def test_samples_depend_only_on_seed_and_step():
    e = ElasticConfig(samples=2)
    a = [sample_choices(CFG, e, 3, t) for t in range(50)]
    assert a == [sample_choices(CFG, e, 3, t) for t in range(50)]
    assert a != [sample_choices(CFG, e, 4, t) for t in range(50)]
    assert len({tuple(c.flags for c in x) for x in a}) > 3  # varies over the steps


def test_wide_narrow_wide_samples_are_distinct_interior_ks():
    n = CFG.num_units
    interior = {wide_narrow_wide(CFG, k) for k in range(1, n)}
    seen = set()
    for t in range(200):
        got = sample_choices(CFG, ElasticConfig(samples=2), 0, t)
        assert len(got) == 2 and len(set(got)) == 2 and set(got) <= interior
        seen |= set(got)
    assert seen == interior  # every K between the Student and the TA gets trained
    assert len(sample_choices(CFG, ElasticConfig(samples=99), 0, 0)) == n - 1


def test_random_samples_are_never_an_endpoint_and_endpoints_rule_samples_none():
    ends = {student_choice(CFG), ta_choice(CFG)}
    got = [c for t in range(300) for c in sample_choices(CFG, ElasticConfig(family="random"), 0, t)]
    assert not ends & set(got) and len(set(got)) == 2**CFG.num_units - 2
    assert sample_choices(CFG, ElasticConfig(rule="endpoints"), 0, 5) == []


@pytest.fixture
def batch(spec, synthetic_root):
    return next(iter(DayReader(spec, synthetic_root, 64).iter_day(DAYS[0])))


def test_train_step_adds_the_sampled_sub_networks_term(spec, batch):
    cfg = tiny_config("elastic.samples=2", "loss.distill_ramp=0")
    model = make_engine(spec, cfg, "teacher", DistContext()).model  # tables placed and filled
    step = TrainStep(model, None, cfg.loss, "teacher", elastic=cfg.elastic, seed=5)
    step.step = 11
    loss, terms = step(batch)
    choices = sample_choices(model.cfg, cfg.elastic, 5, 11)
    s, t = model(batch)
    extra = [model.forward_choice(batch, c) for c in choices]
    want = matta_loss(s, t, batch.teacher, 11, cfg.loss, extra, cfg.elastic)
    assert float(loss) == pytest.approx(float(want.total), rel=1e-5)
    assert float(terms["loss/elastic"]) == pytest.approx(float(want.elastic), rel=1e-5)
    plain = matta_loss(s, t, batch.teacher, 11, cfg.loss)
    assert float(want.total - plain.total) == pytest.approx(float(want.elastic), rel=1e-5)  # weight 1
    # the endpoints rule is today's two-endpoint step
    two = TrainStep(model, None, cfg.loss, "teacher", elastic=cfg.elastic.model_copy(update={"rule": "endpoints"}))
    two.step = 11
    loss2, terms2 = two(batch)
    assert "loss/elastic" not in terms2 and float(loss2) == pytest.approx(float(plain.total), rel=1e-5)


def test_models_without_sub_networks_ignore_the_rule(spec, batch):
    for extra in (("student_only=true",), ("model.share_params=false",)):
        cfg = tiny_config(*extra)
        model = make_engine(spec, cfg, "teacher", DistContext()).model  # tables placed and filled
        step = TrainStep(model, None, cfg.loss, "teacher", elastic=cfg.elastic)
        assert step.elastic is None and "loss/elastic" not in step(batch)[1]
