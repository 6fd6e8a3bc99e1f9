"""Arms and the run-config overrides of each (arm, seed) job."""

import pytest

from recsys_matta.errors import UserError
from recsys_matta.specs.config import resolve_config
from recsys_matta.study.arms import HOST_DEFAULTS, QUICK, STUDY_DEFAULTS, StudySettings
from recsys_matta.study.command import plan_jobs

DAYS = ["2026-01-01", "2026-01-02"]


def _settings(tmp_path, **kw):
    return StudySettings(spec="s.yaml", data=tmp_path, out=tmp_path / "study", **kw)


def _cfgs(settings):
    return {(j.arm, j.seed): resolve_config(None, list(j.overrides)) for j in plan_jobs(settings, DAYS)}


def test_every_arm_and_seed_gets_its_configuration(tmp_path):
    s = _settings(tmp_path, seeds=2, overrides=["optim.lr=0.01", "matta_adam:loss.w_distill=0.5"])
    jobs = plan_jobs(s, DAYS)
    assert [(j.arm, j.seed) for j in jobs[:4]] == [
        ("matta_shampoo", 0), ("shampoo_only", 0), ("matta_adam", 0), ("matta_shampoo_endpoints", 0)
    ]
    assert len(jobs) == 16 and all(j.days == tuple(DAYS) for j in jobs)
    assert jobs[0].workdir.endswith("study/runs/matta_shampoo/seed0")
    c = _cfgs(s)
    host = c[("matta_shampoo", 1)]
    assert host.baseline.enabled and host.optim.dense == "shampoo" and not host.student_only
    assert host.train.seed == 1 and host.train.threads == 1 and not host.train.progress
    # the host and every shared-MatTA arm keep the checkpoints the elastic frontier scores from
    assert host.train.keep_checkpoints == 2 and c[("shampoo_only", 1)].train.keep_checkpoints == 1
    assert c[("matta_adam", 1)].train.keep_checkpoints == 2
    assert c[("matta_shampoo_noshare", 1)].train.keep_checkpoints == 1
    long = {(j.arm, j.seed): resolve_config(None, list(j.overrides)) for j in plan_jobs(s, [f"2026-01-0{i}" for i in range(1, 9)])}
    assert long[("matta_shampoo_random", 0)].train.keep_checkpoints == 5  # 4 scored days + 1
    assert host.elastic.rule == "sandwich" and host.elastic.family == "wide_narrow_wide"
    assert c[("matta_shampoo_endpoints", 0)].elastic.rule == "endpoints"
    assert c[("matta_shampoo_random", 0)].elastic.family == "random"
    assert host.optim.lr == 0.01 and host.model.share_params
    so = c[("shampoo_only", 0)]
    assert so.student_only and so.optim.dense == "shampoo" and not so.baseline.enabled
    adam = c[("matta_adam", 0)]
    # the Adam arm runs at the baseline's Adam lr, not the Shampoo lr given for every arm
    assert adam.optim.dense == "adam" and adam.optim.lr == adam.baseline.optim.lr == 1e-3
    assert adam.loss.w_distill == 0.5 and host.loss.w_distill == 1.0  # arm-only override
    ns = c[("matta_shampoo_noshare", 0)]
    assert not ns.model.share_params and ns.optim.dense == "shampoo" and not ns.baseline.enabled
    ni = c[("matta_shampoo_nested_init", 0)]
    assert ni.model.ta_init == "nested" and host.model.ta_init == "ta_fan" and ni.optim.dense == "shampoo"
    ta = c[("ta_alone", 1)]
    assert ta.ta_alone and not ta.student_only and ta.optim.dense == "shampoo" and not ta.baseline.enabled


def test_adam_lr_option_and_quick_mode(tmp_path):
    s = _settings(tmp_path, seeds=5, quick=True, adam_lr=0.02)
    assert s.seed_list() == [0, 1]
    c = _cfgs(s)
    assert c[("matta_adam", 1)].optim.lr == 0.02
    assert c[("matta_shampoo", 0)].preset == "small" and c[("matta_shampoo", 0)].train.max_batches_per_day == 20
    head = [*STUDY_DEFAULTS, *HOST_DEFAULTS, "train.keep_checkpoints=2", *QUICK]
    assert list(plan_jobs(s, DAYS)[0].overrides[: len(head)]) == head  # the host job


def test_baseline_host_is_the_first_arm_without_matta_shampoo(tmp_path):
    s = _settings(tmp_path, arms=["matta_adam", "shampoo_only"])
    assert s.host_arm() == "shampoo_only"  # canonical order: shampoo_only comes first
    c = _cfgs(s)
    assert c[("shampoo_only", 0)].baseline.enabled and not c[("matta_adam", 0)].baseline.enabled


def test_bad_arm_names_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown arm"):
        _settings(tmp_path, arms=["matta"]).selected_arms()
    with pytest.raises(UserError, match="unknown arm 'nope'"):
        plan_jobs(_settings(tmp_path, overrides=["nope:optim.lr=1"]), DAYS)
