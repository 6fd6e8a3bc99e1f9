"""MatTAModel: shared EBC, Matryoshka embeddings, Student/TA towers, forward/backward."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from recsys_matta.models.choice import student_choice, ta_choice, wide_narrow_wide
from recsys_matta.models.matta import MatTAModel
from tests.models.tiny import SHARED_SPEC, TINY_CFG, TINY_SPEC, make_batch, randomize_

D_S, D_TA = TINY_CFG.d_model


def _model(spec=TINY_SPEC, cfg=TINY_CFG, student_only=False, seed=0) -> MatTAModel:
    torch.manual_seed(seed)
    m = MatTAModel(spec, cfg, student_only=student_only)
    randomize_(m, seed)
    return m


def test_one_ebc_with_one_table_per_feature():
    m = _model()
    tables = {c.name: (c.num_embeddings, c.embedding_dim, c.feature_names) for c in m.ebc.embedding_bag_configs()}
    assert tables == {"a": (10, D_TA, ["a"]), "b": (6, D_TA, ["b"]), "c": (8, D_TA, ["c"])}
    assert [n for n, _ in m.named_children()][0] == "ebc"
    emb = [n for n, _ in m.named_parameters() if n.startswith("ebc.")]
    assert sorted(emb) == [f"ebc.embedding_bags.{t}.weight" for t in "abc"]
    student = _model(student_only=True)
    assert {c.embedding_dim for c in student.ebc.embedding_bag_configs()} == {D_S}


def test_shared_table_and_pooled_tokens_in_spec_order():
    m = _model(SHARED_SPEC)
    configs = m.ebc.embedding_bag_configs()
    assert [(c.name, c.feature_names) for c in configs] == [("shared", ["a", "c"]), ("b", ["b"])]
    batch = make_batch(SHARED_SPEC, 5, seed=1)
    pooled = m.pooled(batch)  # (B, F, d) in spec order a, b, c
    assert pooled.shape == (5, 3, D_TA)
    kjt = batch.sparse.to_dict()
    for i, (name, table) in enumerate([("a", "shared"), ("b", "b"), ("c", "shared")]):
        jt = kjt[name]
        w = m.ebc.embedding_bags[table].weight
        expected = F.embedding_bag(jt.values(), w, jt.offsets(), mode="mean", include_last_offset=True)
        torch.testing.assert_close(pooled[:, i], expected, rtol=1e-6, atol=1e-6)
    assert torch.all(pooled[1, 2] == 0)  # empty bag of c pools to zeros


def test_forward_shapes_and_choice_paths_agree():
    m = _model()
    batch = make_batch(TINY_SPEC, 6)
    s, t = m(batch)
    assert s.shape == (6,) and t is not None and t.shape == (6,)
    assert not torch.allclose(s, t)
    assert torch.equal(m.forward_choice(batch, student_choice(TINY_CFG)), s)
    assert torch.equal(m.forward_choice(batch, ta_choice(TINY_CFG)), t)


def test_forward_elastic_shares_prefixes_and_matches_each_choice():
    m = _model()
    batch = make_batch(TINY_SPEC, 6)
    n = TINY_CFG.num_units
    choices = [wide_narrow_wide(TINY_CFG, k) for k in range(1, n)]
    calls = []
    for i, block in enumerate(m.tower.blocks):
        orig = block.forward_at
        block.forward_at = lambda x, w, orig=orig, i=i: calls.append((i, w)) or orig(x, w)
    s, t, extra = m.forward_elastic(batch, choices)
    alone = []
    for i, block in enumerate(m.tower.blocks):
        del block.forward_at
    for c in choices:
        alone.append(m.forward_choice(batch, c))
    assert torch.equal(s, m(batch)[0]) and torch.equal(t, m(batch)[1])
    for got, want in zip(extra, alone, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # the first block runs once per distinct (d, width) prefix, not once per sub-network
    first = {(c.widths(TINY_CFG).d, c.widths(TINY_CFG).blocks[0]) for c in [student_choice(TINY_CFG), ta_choice(TINY_CFG), *choices]}
    assert sum(i == 0 for i, _ in calls) == len(first) < len(choices) + 2


def test_student_reads_exactly_the_first_d_s_dims():
    m = _model()
    batch = make_batch(TINY_SPEC, 6)
    s0, t0 = m(batch)
    with torch.no_grad():
        for bag in m.ebc.embedding_bags.values():
            bag.weight[:, D_S:] += 1.0  # TA-only columns
    s1, t1 = m(batch)
    assert torch.equal(s0, s1)
    assert (t0 - t1).abs().max() > 1e-3
    with torch.no_grad():
        for bag in m.ebc.embedding_bags.values():
            bag.weight[:, D_S - 1] += 1.0  # last Student column
    s2, _ = m(batch)
    assert (s2 - s1).abs().max() > 1e-3


def test_student_loss_gradient_reaches_only_student_embedding_columns():
    m = _model()
    batch = make_batch(TINY_SPEC, 6)
    s, _ = m(batch)
    s.sum().backward()
    for bag in m.ebc.embedding_bags.values():
        g = bag.weight.grad
        assert torch.all(g[:, D_S:] == 0)
        assert g[:, :D_S].abs().sum() > 0
    for i in (1, 4):  # the TA-only GAU and residual blocks
        assert TINY_CFG.blocks[i].ta_only
        assert all(p.grad is None for p in m.tower.blocks[i].parameters())


def test_forward_backward_trains_on_a_batch():
    torch.manual_seed(0)
    m = MatTAModel(TINY_SPEC, TINY_CFG)  # default initialisation
    batch = make_batch(TINY_SPEC, 32, seed=2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, foreach=False)

    def loss_fn():
        s, t = m(batch)
        return F.binary_cross_entropy_with_logits(s, batch.teacher) + F.binary_cross_entropy_with_logits(
            t, batch.teacher
        )

    first = loss_fn()
    opt.zero_grad()
    first.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # zero-initialised output weights of the TA-only residual block get gradient too
    assert m.tower.blocks[4].fc2.weight.grad.abs().sum() > 0
    opt.step()
    for _ in range(30):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_fn().item() < first.item() - 0.05


def test_student_only_is_the_student_architecture():
    base = _model(student_only=True)
    batch = make_batch(TINY_SPEC, 4)
    s, t = base(batch)
    assert t is None and s.shape == (4,)
    assert base.student_tower is None and len(base.tower.blocks) == 3  # no TA-only blocks
    assert [b.kind for b in base.tower.cfg.blocks] == ["gau", "dense", "dense"]
    matta = _model()
    # same tower structure as the Student slice of the MatTA tower
    full = matta.tower.extract(TINY_CFG.student())
    assert {n: p.shape for n, p in base.tower.named_parameters()} == {
        n: p.shape for n, p in full.named_parameters()
    }
    with pytest.raises(ValueError, match="only the Student"):
        base.forward_choice(batch, ta_choice(TINY_CFG))


def test_unshared_towers_are_separate():
    cfg = TINY_CFG.model_copy(update={"share_params": False})
    m = _model(cfg=cfg)
    batch = make_batch(TINY_SPEC, 6)
    s0, t0 = m(batch)
    with torch.no_grad():
        for p in m.tower.parameters():
            p.add_(0.3)
    s1, t1 = m(batch)
    assert torch.equal(s0, s1) and (t0 - t1).abs().max() > 1e-3
    student_ptrs = {p.untyped_storage().data_ptr() for p in m.student_tower.parameters()}
    ta_ptrs = {p.untyped_storage().data_ptr() for p in m.tower.parameters()}
    assert not student_ptrs & ta_ptrs
    assert torch.equal(m.forward_choice(batch, student_choice(cfg)), s1)
    with pytest.raises(ValueError, match="share_params=True"):
        m.forward_choice(batch, wide_narrow_wide(cfg, 2))


def _write_day(root: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c_lists = [rng.integers(0, 7, size=rng.integers(0, 4)).tolist() for _ in range(rows)]
    table = pa.table(
        {
            "a": pa.array(rng.integers(0, 1000, rows), pa.int64()),
            "x": pa.array(rng.normal(size=rows), pa.float32()),
            "b": pa.array(rng.integers(0, 5, rows), pa.int64()),
            "c": pa.array(c_lists, pa.list_(pa.int64())),
            "y": pa.array(rng.normal(size=rows), pa.float32()),
            "p": pa.array(rng.uniform(size=rows), pa.float32()),
            "click": pa.array(rng.integers(0, 2, rows), pa.int64()),
        }
    )
    (root / "day=2026-01-01").mkdir(parents=True)
    pq.write_table(table, root / "day=2026-01-01" / "part-0.parquet")


def test_forward_backward_on_batches_from_the_reader(tmp_path):
    reader_mod = pytest.importorskip("recsys_matta.data.reader")
    _write_day(tmp_path, 40, seed=3)
    reader = reader_mod.DayReader(TINY_SPEC, tmp_path, batch_size=16, prefetch=0)
    m = _model()
    sizes = []
    for batch in reader.iter_day("2026-01-01"):
        s, t = m(batch)
        assert s.shape == t.shape == (batch.size,)
        (F.binary_cross_entropy_with_logits(s, batch.teacher) + t.mean()).backward()
        sizes.append(batch.size)
    assert sum(sizes) == 40
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
