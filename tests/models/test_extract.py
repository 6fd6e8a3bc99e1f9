"""Mix'n'Match: choices, extraction equivalence for every choice, standalone save/load."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recsys_matta.models.choice import Choice, num_units
from recsys_matta.models.extract import (
    all_choices,
    extract,
    student_choice,
    ta_choice,
    wide_narrow_wide,
    wide_narrow_wide_sweep,
)
from recsys_matta.models.matta import MatTAModel
from recsys_matta.models.standalone import StandaloneModel
from recsys_matta.safeload import UnsafeFileError
from recsys_matta.specs.model import ResidualBlockConfig, Widths
from tests.models.tiny import SHARED_SPEC, TINY_CFG, TINY_SPEC, make_batch, randomize_

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> MatTAModel:
    torch.manual_seed(0)
    m = MatTAModel(TINY_SPEC, TINY_CFG)
    randomize_(m, 0)
    return m.eval()


@pytest.fixture(scope="module")
def batch():
    return make_batch(TINY_SPEC, 8, seed=5)


def _run(sm: StandaloneModel, batch) -> torch.Tensor:
    return sm(batch.sparse.values(), batch.sparse.lengths(), batch.dense)


def test_choice_enumeration():
    assert num_units(TINY_CFG) == 6  # d_model, gau, extra gau, 2 mlp layers, extra mlp
    choices = all_choices(TINY_CFG)
    assert len(choices) == 64 == len(set(choices))
    assert choices[0] == student_choice(TINY_CFG) and choices[-1] == ta_choice(TINY_CFG)
    assert student_choice(TINY_CFG).widths(TINY_CFG) == Widths(2, ((3, 2), None, (3,), (2,), None))
    assert ta_choice(TINY_CFG).widths(TINY_CFG) == Widths(4, ((6, 3), (6, 3), (5,), (4,), ()))
    assert wide_narrow_wide(TINY_CFG, 3).label == "d=W gau=W xgau=0 mlp=NN xmlp=1"
    with pytest.raises(ValueError, match="exceed"):
        all_choices(TINY_CFG, limit=32)


def test_wide_narrow_wide():
    flags = {k: wide_narrow_wide(TINY_CFG, k).flags for k in range(7)}
    T, F_ = True, False
    assert flags[0] == (F_,) * 6
    assert flags[2] == (T, F_, F_, F_, F_, T)  # d_model wide + the TA-only MLP block in
    assert flags[3] == (T, T, F_, F_, F_, T)
    assert flags[4] == (T, T, F_, F_, T, T)
    assert flags[6] == (T,) * 6
    assert wide_narrow_wide(TINY_CFG, 0) == student_choice(TINY_CFG)
    assert wide_narrow_wide(TINY_CFG, 6) == ta_choice(TINY_CFG)
    sweep = wide_narrow_wide_sweep(TINY_CFG)
    assert [k for k, _ in sweep] == [0, 2, 4, 6]
    odd = TINY_CFG.model_copy(update={"blocks": TINY_CFG.blocks[:-1]})
    assert [k for k, _ in wide_narrow_wide_sweep(odd)] == [0, 2, 4, 5]
    with pytest.raises(ValueError, match="outside"):
        wide_narrow_wide(TINY_CFG, 7)


def test_sweep_sizes_grow(model):
    sizes = [extract(model, c).num_parameters()["dense"] for _, c in wide_narrow_wide_sweep(TINY_CFG)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_every_choice_extracts_to_an_equivalent_standalone_model(model, batch):
    rows = 10 + 6 + 8
    with torch.no_grad():
        for choice in all_choices(TINY_CFG):
            sm = extract(model, choice)
            ref = model.forward_choice(batch, choice)
            torch.testing.assert_close(_run(sm, batch), ref, rtol=1e-5, atol=1e-5, msg=choice.label)
            w = choice.widths(TINY_CFG)
            n = model.tower.num_parameters(w)
            assert sm.num_parameters() == {"dense": n, "embedding": rows * w.d}
            assert sum(p.numel() for p in sm.parameters()) == rows * w.d + n


def test_student_and_ta_extractions_equal_the_model_paths(model, batch):
    with torch.no_grad():
        s, t = model(batch)
        torch.testing.assert_close(_run(extract(model, student_choice(TINY_CFG)), batch), s, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(_run(extract(model, ta_choice(TINY_CFG)), batch), t, rtol=1e-6, atol=1e-6)


def test_extracted_tables_are_cut_copies(model):
    sm = extract(model, student_choice(TINY_CFG))
    expected = torch.cat([model.ebc.embedding_bags[t].weight[:, :2] for t in "abc"])
    assert sm.embedding.weight.shape == (24, 2)
    assert torch.equal(sm.embedding.weight, expected)
    assert sm.row_offsets.tolist() == [0, 10, 16]
    ptr = sm.embedding.weight.untyped_storage().data_ptr()
    assert all(ptr != p.untyped_storage().data_ptr() for p in model.parameters())


def test_shared_table_spec_extracts():
    torch.manual_seed(1)
    m = MatTAModel(SHARED_SPEC, TINY_CFG)
    randomize_(m, 1)
    b = make_batch(SHARED_SPEC, 5, seed=2)
    with torch.no_grad():
        for choice in (student_choice(TINY_CFG), wide_narrow_wide(TINY_CFG, 3), ta_choice(TINY_CFG)):
            sm = extract(m, choice)
            assert sm.embedding.weight.shape[0] == 10 + 6  # the shared table is stored once
            torch.testing.assert_close(_run(sm, b), m.forward_choice(b, choice), rtol=1e-5, atol=1e-5)


def test_unshared_model_extracts_student_and_ta_only(batch):
    cfg = TINY_CFG.model_copy(update={"share_params": False})
    torch.manual_seed(2)
    m = MatTAModel(TINY_SPEC, cfg)
    randomize_(m, 2)
    with torch.no_grad():
        s, t = m(batch)
        torch.testing.assert_close(_run(extract(m, student_choice(cfg)), batch), s, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(_run(extract(m, ta_choice(cfg)), batch), t, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="share_params=True"):
        extract(m, wide_narrow_wide(cfg, 2))


def test_choice_for_another_config_is_rejected(model):
    other = Choice((False,) * 5, ("d", "gau", "mlp", "mlp", "xmlp"))
    with pytest.raises(ValueError, match="units"):
        extract(model, other)


def test_out_of_range_ids_are_named(model, batch):
    sm = extract(model, student_choice(TINY_CFG))
    sm.check_ids(batch.sparse.values(), batch.sparse.lengths())  # valid: no error
    values = batch.sparse.values().clone()
    values[8] = 6  # first id of feature b (8 single-valued ids of a come first); b has 6 rows
    with pytest.raises(ValueError, match="feature 'b'"):
        sm.check_ids(values, batch.sparse.lengths())


def test_save_load_and_pickle_roundtrip(model, batch, tmp_path):
    sm = extract(model, wide_narrow_wide(TINY_CFG, 3))
    with torch.no_grad():
        ref = _run(sm, batch)
        sm.save(tmp_path / "m")
        assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "state_dict.pt"]
        assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "m" / "state_dict.pt") == []
        loaded = StandaloneModel.load(tmp_path / "m")
        assert torch.equal(_run(loaded, batch), ref)
        assert loaded.label == sm.label == wide_narrow_wide(TINY_CFG, 3).label
        torch.save(sm, tmp_path / "whole.pt")  # the module pickles (in-process use) ...
        # ... but a pickled module is never loaded back: an old-format artifact
        with pytest.raises(UnsafeFileError, match=r"whole\.pt: refused.*re-register"):
            StandaloneModel.load(tmp_path / "whole.pt")


def test_standalone_loads_and_runs_without_torchrec(model, batch, tmp_path):
    sm = extract(model, ta_choice(TINY_CFG))
    sm.save(tmp_path / "m")
    torch.save(
        {"values": batch.sparse.values(), "lengths": batch.sparse.lengths(), "dense": batch.dense},
        tmp_path / "inputs.pt",
    )
    with torch.no_grad():
        torch.save(_run(sm, batch), tmp_path / "expected.pt")
    code = f"""
import sys
sys.modules["torchrec"] = None  # any import of torchrec now fails
import torch
from recsys_matta.models.standalone import StandaloneModel
from recsys_matta.safeload import UnsafeFileError
m = StandaloneModel.load({str(tmp_path / "m")!r})
x = torch.load({str(tmp_path / "inputs.pt")!r})
with torch.no_grad():
    out = m(x["values"], x["lengths"], x["dense"])
assert torch.equal(out, torch.load({str(tmp_path / "expected.pt")!r}))
assert not [k for k in sys.modules if k.startswith("torchrec") and sys.modules[k] is not None]
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok"


def test_torch_export_with_dynamic_batch(model, batch):
    sm = extract(model, wide_narrow_wide(TINY_CFG, 2))
    program = sm.export(batch.sparse.values(), batch.sparse.lengths(), batch.dense)
    with torch.no_grad():
        for size, seed in ((8, 9), (1, 10), (33, 11)):  # other sizes, ids and lengths
            other = make_batch(TINY_SPEC, size, seed=seed)
            args = (other.sparse.values(), other.sparse.lengths(), other.dense)
            torch.testing.assert_close(program.module()(*args), sm(*args), rtol=1e-6, atol=1e-6)


def test_edge_config_without_gau_hidden_layers_or_dense_features():
    spec = SHARED_SPEC.model_copy(update={"features": [f for f in SHARED_SPEC.features if f.kind == "sparse"]})
    cfg = TINY_CFG.model_copy(update={"blocks": [ResidualBlockConfig()]})
    torch.manual_seed(3)
    m = MatTAModel(spec, cfg)
    randomize_(m, 3)
    b = make_batch(spec, 4, seed=4)
    assert b.dense.shape == (4, 0)
    choices = all_choices(cfg)
    assert len(choices) == 4  # d_model x the residual block
    with torch.no_grad():
        for choice in choices:
            torch.testing.assert_close(_run(extract(m, choice), b), m.forward_choice(b, choice), rtol=1e-5, atol=1e-5)
