"""The one training step: TrainStep (MatTA + baseline losses) and run_steps."""

import pytest
import torch

from recsys_matta.data.reader import DayReader
from recsys_matta.distributed.context import DistContext
from recsys_matta.distributed.factory import make_engine
from recsys_matta.train.loss import baseline_loss, matta_loss
from recsys_matta.train.step import NonFiniteLossError, StepOptimizers, TrainStep, run_steps
from tests.tiny import DAYS, tiny_config


@pytest.fixture
def batch(spec, synthetic_root):
    return next(iter(DayReader(spec, synthetic_root, 64).iter_day(DAYS[0])))


def test_train_step_is_the_matta_loss_plus_the_baseline_loss(spec, batch):
    cfg = tiny_config()
    models = make_engine(spec, cfg, "teacher", DistContext()).models
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
    engine = make_engine(spec, cfg, "teacher", DistContext())
    models = engine.models
    before = engine.state_dict()["model"]
    batch.teacher[0] = float("nan")
    alone = TrainStep(models.model, None, cfg.loss, "teacher")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss on day D at step 0 \(\{'loss/total': nan"):
        list(run_steps(alone, StepOptimizers([engine.opt]), [batch], torch.device("cpu"), "D"))
    with pytest.raises(NonFiniteLossError, match="on day D at step 3"):
        list(engine.train([batch], 3, "D"))
    after = engine.state_dict()["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)  # no weight saw the NaN


def test_engine_trains_both_models_with_their_own_optimizers(spec, batch):
    cfg = tiny_config("baseline.optim.lr=0.02")
    assert cfg.baseline.optim.dense == "adam" and cfg.baseline.optim.betas == (0.9, 0.999)
    engine = make_engine(spec, cfg, "teacher", DistContext())
    group = engine.baseline_opt.dense.param_groups[0]
    assert (group["lr"], group["betas"]) == (0.02, (0.9, 0.999))  # nothing inherited from `optim`
    before = engine.state_dict()
    (res,) = list(engine.train([batch], 0, DAYS[0]))
    assert res.rows == batch.size and {"loss/total", "loss/ta", "loss/baseline"} <= set(res.terms)
    after = engine.state_dict()
    for key in ("model", "baseline"):
        assert any(not torch.equal(v, before[key][k]) for k, v in after[key].items())


def test_a_step_updates_only_the_rows_its_batch_touches(spec, batch):
    """FBGEMM's fused sparse row-wise Adagrad: rows outside the batch keep their weights and
    their accumulators (one process, as at every world size)."""
    engine = make_engine(spec, tiny_config("baseline.enabled=false"), "teacher", DistContext())
    before = engine.state_dict()
    list(engine.train([batch], 0, DAYS[0]))
    after = engine.state_dict()
    ids = batch.sparse["user_id"].values().unique()
    table = "ebc.embedding_bags.user_id.weight"
    changed = (after["model"][table] != before["model"][table]).any(dim=1)
    assert changed.nonzero().flatten().tolist() == ids.tolist()
    names = [k for k in after["model"] if k.startswith("ebc.")]
    sums = after["optim"]["embedding"]["state"][names.index(table)]["sum"].flatten()
    assert (sums != 0).nonzero().flatten().tolist() == ids.tolist()


def test_the_initial_tables_are_deterministic_and_chunked(spec):
    """Same seed, same tables (built shard by shard, never in full); another seed, other
    tables; the rows of a table are those of `init_rows` at any offset."""
    from recsys_matta.models.embedding import INIT_CHUNK_ROWS, init_rows

    cfg = tiny_config("baseline.enabled=false")
    a, b = (make_engine(spec, cfg, "teacher", DistContext()).state_dict()["model"] for _ in range(2))
    c = make_engine(spec, tiny_config("baseline.enabled=false", "train.seed=1"), "teacher", DistContext())
    assert all(torch.equal(a[k], b[k]) for k in a)
    table = "ebc.embedding_bags.user_id.weight"
    assert not torch.equal(a[table], c.state_dict()["model"][table])
    rows, dim = a[table].shape
    lo = INIT_CHUNK_ROWS - 3 if rows > INIT_CHUNK_ROWS else rows - 5
    assert torch.equal(init_rows(0, "user_id", rows, dim, lo, rows, slice(2, 6)), a[table][lo:, 2:6])
    assert float(a[table].abs().max()) <= 0.05


@pytest.mark.slow  # ~1.5 min of compiling on 2 CPU cores
def test_train_compile_runs_the_tower_compiled_with_the_eager_losses(spec, synthetic_root):
    """train.compile=true: the elastic step's shared tower runs through torch.compile (new graphs
    appear) and gives the eager step's loss terms and weights, to float rounding, over steps that
    sample different sub-networks and a last batch of another size. Dense Adam: Shampoo's first
    step (factors of one gradient) turns float rounding into full-size steps (as in
    test_optim.test_bf16_rotations_track_the_float32_update), compiled or not."""
    from torch._dynamo.utils import counters

    batches = list(DayReader(spec, synthetic_root, 128).iter_day(DAYS[0]))[:5]
    batches.append(next(iter(DayReader(spec, synthetic_root, 40).iter_day(DAYS[0]))))
    runs = {}
    graphs = counters["stats"]["unique_graphs"]
    for compiled in (False, True):
        cfg = tiny_config(f"train.compile={str(compiled).lower()}", "optim.dense=adam", "optim.lr=1e-3")
        engine = make_engine(spec, cfg, "teacher", DistContext())
        terms = [r.terms for r in engine.train(iter(batches), 0, DAYS[0])]
        runs[compiled] = (terms, engine.state_dict()["model"])
    assert counters["stats"]["unique_graphs"] > graphs  # the compiled arm compiled something
    (eager, w_eager), (comp, w_comp) = runs[False], runs[True]
    assert len(eager) == len(comp) == 6
    for a, b in zip(eager, comp):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k
    dense = [k for k in w_eager if "tower" in k and isinstance(w_eager[k], torch.Tensor)]
    assert dense
    for k in dense:
        assert torch.allclose(w_comp[k], w_eager[k], rtol=1e-4, atol=1e-6), k


def test_bf16_precision_runs_the_model_forward_in_bf16_and_the_loss_in_float32(spec, batch, monkeypatch):
    """`train.precision=bfloat16`: the tower's matmuls under autocast (a bf16 linear output), the
    loss and every gradient float32, the loss within bf16 rounding of the float32 step's, and the
    baseline's term unchanged (it stays float32)."""
    cfg = tiny_config()
    models = make_engine(spec, cfg, "teacher", DistContext()).models
    fp32 = TrainStep(models.model, models.baseline, cfg.loss, "teacher")
    bf16 = TrainStep(models.model, models.baseline, cfg.loss, "teacher", precision="bfloat16")
    dtypes, linear = [], torch.nn.functional.linear

    def spy(*args, **kwargs):
        out = linear(*args, **kwargs)
        dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "linear", spy)  # the nested layers call F.linear
    want, want_terms = fp32(batch)
    n = len(dtypes)
    got, terms = bf16(batch)
    assert n and set(dtypes[:n]) == {torch.float32}
    assert torch.bfloat16 in set(dtypes[n:])  # the MatTA tower's layers (the baseline's: float32)
    assert got.dtype == torch.float32 and all(v.dtype == torch.float32 for v in terms.values())
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=2e-2)
    assert float(got.detach()) != float(want.detach())  # bf16 did run
    assert float(terms["loss/baseline"]) == float(want_terms["loss/baseline"])
    got.sum().backward()
    grads = [p.grad for p in models.model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="precision must be float32 or bfloat16, got 'fp16'"):
        TrainStep(models.model, None, cfg.loss, "teacher", precision="fp16")


def test_train_precision_reaches_the_engines_step(spec, batch):
    engine = make_engine(spec, tiny_config("train.precision=bfloat16"), "teacher", DistContext())
    assert engine.step_module.autocast
    assert not make_engine(spec, tiny_config(), "teacher", DistContext()).step_module.autocast
    (res,) = list(engine.train([batch], 0, DAYS[0]))
    assert res.rows == batch.size and all(torch.isfinite(torch.tensor(v)) for v in res.terms.values())
