"""`model.ta_init`: the fan-in of the nested (shared) dense weights. The default `ta_fan` starts the
TA exactly as a standalone TA would start; the earlier `nested` (sqrt(M_S M_TA)) starts it above."""

import math

import pytest
import torch

from recsys_matta.models.matta import MatTAModel
from recsys_matta.modules import MNestedLinear
from recsys_matta.specs.model import DenseBlockConfig
from tests.models.tiny import TINY_CFG, TINY_SPEC


@pytest.mark.parametrize("fan, expected", [("student_fan", 64), ("ta_fan", 256), ("nested", math.sqrt(64 * 256))])
def test_fan_in_of_a_shared_weight(fan, expected):
    torch.manual_seed(0)
    m = MNestedLinear(64, 256, 128, 512, init_gain=2.0, fan=fan)
    assert float(m.weight.detach().std()) == pytest.approx(2.0 / math.sqrt(expected), rel=0.02)
    assert torch.all(m.bias == 0)
    unshared = MNestedLinear(64, 256, 128, 512, share_params=False, init_gain=2.0, fan="student_fan")
    assert float(unshared.weight.detach().std()) == pytest.approx(2.0 / 16.0, rel=0.02)  # its own fan-in


def _std(m: MatTAModel, name: str) -> float:
    return float(dict(m.named_parameters())[name].detach().std())


def test_ta_fan_starts_the_ta_as_a_standalone_ta():
    blocks = list(TINY_CFG.blocks)
    blocks[2:4] = [DenseBlockConfig(width=(32, 128)), DenseBlockConfig(width=(16, 64))]
    cfg = TINY_CFG.model_copy(update={"blocks": blocks})
    name = "tower.blocks.3.linear.weight"  # (64, 128), Student block (16, 32)
    std = {}
    for mode in ("nested", "ta_fan", "student_fan"):
        torch.manual_seed(0)
        std[mode] = _std(MatTAModel(TINY_SPEC, cfg.model_copy(update={"ta_init": mode})), name)
    gain = math.sqrt(2.0)
    assert std["nested"] == pytest.approx(gain / math.sqrt(math.sqrt(32 * 128)), rel=0.05)
    assert std["ta_fan"] == pytest.approx(gain / math.sqrt(128), rel=0.05)
    assert std["student_fan"] == pytest.approx(gain / math.sqrt(32), rel=0.05)
    torch.manual_seed(0)
    alone = MatTAModel(TINY_SPEC, cfg, ta_alone=True)  # the TA architecture built alone
    assert _std(alone, name) == pytest.approx(std["ta_fan"], rel=0.05)
    torch.manual_seed(0)
    m = MatTAModel(TINY_SPEC, cfg.model_copy(update={"ta_init": "ta_fan"}))
    # TA-only blocks keep their identity start (zero output weights) whatever the mode
    assert torch.all(m.tower.blocks[4].fc2.weight == 0) and torch.all(m.tower.blocks[0].to_out.weight == 0)
    unshared = MatTAModel(TINY_SPEC, cfg.model_copy(update={"ta_init": "ta_fan", "share_params": False}))
    assert _std(unshared, name) == pytest.approx(std["ta_fan"], rel=0.05)  # the TA tower follows it
    assert _std(unshared, "student_tower.blocks.2.linear.weight") == pytest.approx(gain / math.sqrt(32), rel=0.1)
