"""Presets and parameter counts (hand-computed for the tiny config, checked against real models)."""

from pathlib import Path

import pytest
import torch

from recsys_matta.models.matta import MatTAModel
from recsys_matta.models.size import param_counts
from recsys_matta.specs import load_spec
from recsys_matta.specs.model import ModelConfig
from recsys_matta.specs.presets import PRESETS, get_preset
from tests.models.tiny import SHARED_SPEC, TINY_CFG, TINY_SPEC

SYNTHETIC = Path(__file__).resolve().parents[2] / "feature_specs" / "synthetic.yaml"


def test_hand_computed_counts_for_the_tiny_config():
    # F = 3 sparse, D = 2 dense -> T = 5 tokens; table rows 10 + 6 + 8 = 24.
    # Student (d 2, e 3, s 2, MLP 3, 2):
    #   dense tokens 2*2*2 = 8
    #   GAU: LN 4 + u 9 + v 9 + z 6 + gamma/beta 8 + out 8 = 44
    #   LayerNorm 4
    #   MLP 10->3: 33, 3->2: 8, 2->1: 3 = 44                              total 100
    # TA (d 4, e 6, s 3, MLP 5, 4, + 1 extra GAU, + 1 residual block):
    #   dense tokens 16
    #   GAU: LN 8 + u 30 + v 30 + z 15 + gamma/beta 12 + out 28 = 123, twice = 246
    #   LayerNorm 8
    #   MLP 20->5: 105, 5->4: 24, residual 2*(16+4) = 40, 4->1: 5 = 174   total 444
    assert param_counts(TINY_SPEC, TINY_CFG) == {
        "student_dense": 100,
        "student_embedding": 48,
        "ta_dense": 444,
        "ta_embedding": 96,
    }


def _numel(model, embedding: bool) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith("ebc.") == embedding)


@pytest.mark.parametrize("spec", [TINY_SPEC, SHARED_SPEC], ids=["tiny", "shared_table"])
def test_counts_match_built_models(spec):
    counts = param_counts(spec, TINY_CFG)
    student = MatTAModel(spec, TINY_CFG, student_only=True)
    assert _numel(student, False) == counts["student_dense"]
    assert _numel(student, True) == counts["student_embedding"]
    matta = MatTAModel(spec, TINY_CFG)
    assert _numel(matta, False) == counts["ta_dense"]  # shared: the Student lives inside the TA
    assert _numel(matta, True) == counts["ta_embedding"]
    unshared = MatTAModel(spec, TINY_CFG.model_copy(update={"share_params": False}))
    assert _numel(unshared, False) == counts["student_dense"] + counts["ta_dense"]


def test_shared_table_counted_once():
    # tables: shared (10 rows, features a and c) + b (6 rows)
    assert param_counts(SHARED_SPEC, TINY_CFG)["ta_embedding"] == 16 * 4


def test_presets():
    assert set(PRESETS) == {"small", "default", "large"}
    assert PRESETS["default"] == ModelConfig()
    spec = load_spec(SYNTHETIC)
    sizes = {name: param_counts(spec, cfg) for name, cfg in PRESETS.items()}
    for c in sizes.values():
        assert c["student_dense"] < c["ta_dense"] and c["student_embedding"] < c["ta_embedding"]
    assert sizes["small"]["ta_dense"] < sizes["default"]["ta_dense"] < sizes["large"]["ta_dense"]
    cfg = get_preset("small")
    cfg.blocks.pop()  # a copy: the preset itself is unchanged
    assert len(PRESETS["small"].blocks) == 4 and PRESETS["small"].blocks[1].width == (64, 256)
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        get_preset("huge")


def test_default_preset_builds_on_the_synthetic_spec():
    spec = load_spec(SYNTHETIC)
    torch.manual_seed(0)
    m = MatTAModel(spec, PRESETS["default"])
    counts = param_counts(spec, PRESETS["default"])
    assert _numel(m, False) == counts["ta_dense"] and _numel(m, True) == counts["ta_embedding"]
