import copy

import pytest
import torch
from torch import nn

from recsys_matta.specs.config import OptimConfig
from recsys_matta.train.optim import DenseOptimizer, Shampoo, split_parameters


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 12, generator=g)
    w = torch.randn(12, generator=g)
    y = (torch.sigmoid(x @ w) > torch.rand(256, generator=g)).float()
    return x, y


def _fit(opt_factory, steps=60):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = opt_factory(model.parameters())
    x, y = _problem()
    losses = []
    for _ in range(steps):
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, opt, losses


@pytest.mark.parametrize(
    "factory",
    [
        lambda p: Shampoo(p, OptimConfig(lr=1e-2, precondition_frequency=5)),
        lambda p: Shampoo(p, OptimConfig(lr=1e-2, precondition_frequency=5, shampoo_impl="heavyball")),
        lambda p: Shampoo(p, OptimConfig(lr=1e-2, precondition_frequency=5, start_preconditioning_step=10)),
        lambda p: DenseOptimizer(p, OptimConfig(dense="adam", lr=1e-2)),
        lambda p: DenseOptimizer(p, OptimConfig(dense="adagrad", lr=5e-2)),
    ],
    ids=["shampoo", "shampoo-heavyball", "shampoo-delayed", "adam", "adagrad"],
)
def test_optimizers_decrease_loss_on_a_tiny_problem(factory):
    _, _, losses = _fit(factory)
    assert losses[-1] < 0.8 * losses[0]


def test_shampoo_preconditions_a_weight_as_one_matrix():
    cfg = OptimConfig(lr=1e-2, precondition_frequency=1, max_preconditioner_dim=64)
    model, opt, _ = _fit(lambda p: Shampoo(p, cfg), steps=3)
    factors = opt.preconditioner_factors(model[0].weight)  # weight (16, 12)
    assert [tuple(f.shape) for f in factors] == [(16, 16), (12, 12)]
    left = factors[0]
    assert torch.allclose(left, left.T, atol=1e-6)  # an EMA of G Gᵀ is symmetric
    assert torch.all(torch.linalg.eigvalsh(left.double()) > -1e-6)  # ... and PSD


def test_shampoo_uses_adam_before_start_step():
    cfg = OptimConfig(lr=1e-2, start_preconditioning_step=5)
    torch.manual_seed(0)
    a = nn.Linear(12, 1)
    b = copy.deepcopy(a)
    sh = Shampoo(a.parameters(), cfg)
    adam = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=cfg.betas, eps=cfg.epsilon, weight_decay=0.0)
    x, y = _problem()
    for _ in range(5):
        for m, o in ((a, sh), (b, adam)):
            o.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(m(x).squeeze(1), y).backward()
            o.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-7)
    assert opt_state_empty(sh)


def opt_state_empty(sh: Shampoo) -> bool:
    return sh.soap.step_count == 0 and not any(g.state for g in sh.soap.groups)


def test_state_dict_round_trip_continues_identically():
    cfg = OptimConfig(lr=1e-2, precondition_frequency=3)
    model, opt, _ = _fit(lambda p: Shampoo(p, cfg), steps=7)
    clone = copy.deepcopy(model)
    opt2 = Shampoo(clone.parameters(), cfg)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    x, y = _problem(1)
    for m, o in ((model, opt), (clone, opt2)):
        for _ in range(4):
            o.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(m(x).squeeze(1), y).backward()
            o.step()
    for p, q in zip(model.parameters(), clone.parameters()):
        assert torch.equal(p, q)


class _WithTables(nn.Module):
    def __init__(self):
        super().__init__()
        self.ebc = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 1)


def test_split_parameters():
    emb, dense = split_parameters(_WithTables())
    assert [p.shape for p in emb] == [torch.Size([10, 4])]
    assert len(dense) == 2


def _reference_soap(params, grads_per_step, lr, betas, beta_s, eps, freq, b):
    """A plain, one-block-at-a-time SOAP following recsys_matta.train.shampoo's docstring."""
    b1, b2 = betas
    state = {}
    for t, grads in enumerate(grads_per_step, 1):
        for pi, (p, g) in enumerate(zip(params, grads)):
            if p.dim() != 2:
                continue  # 1-D: AdamW (checked separately)
            for r0 in range(0, p.shape[0], b):
                for c0 in range(0, p.shape[1], b):
                    G = g[r0 : r0 + b, c0 : c0 + b].double()
                    key = (pi, r0, c0)
                    if key not in state:
                        L, R = G @ G.T, G.T @ G
                        ql = torch.linalg.eigh(L).eigenvectors.flip(-1)
                        qr = torch.linalg.eigh(R).eigenvectors.flip(-1)
                        state[key] = dict(L=L, R=R, QL=ql, QR=qr, M=torch.zeros_like(G), V=torch.zeros_like(G))
                    s = state[key]
                    gp = s["QL"].T @ G @ s["QR"]
                    s["M"] = b1 * s["M"] + (1 - b1) * gp
                    s["V"] = b2 * s["V"] + (1 - b2) * gp * gp
                    upd = (s["M"] / (1 - b1**t)) / ((s["V"] / (1 - b2**t)).sqrt() + eps)
                    with torch.no_grad():
                        p[r0 : r0 + b, c0 : c0 + b] -= lr * (s["QL"] @ upd @ s["QR"].T).to(p.dtype)
                    if t > 1:
                        s["L"] = beta_s * s["L"] + (1 - beta_s) * G @ G.T
                        s["R"] = beta_s * s["R"] + (1 - beta_s) * G.T @ G
                    if t % freq == 0:
                        for fac, q, left in (("L", "QL", True), ("R", "QR", False)):
                            old = s[q]
                            lq = s[fac] @ old
                            order = torch.argsort(torch.diag(old.T @ s[fac] @ old), descending=True)
                            new = torch.linalg.qr(lq[:, order]).Q
                            rot = new.T @ old
                            s["M"] = rot @ s["M"] if left else s["M"] @ rot.T
                            s["V"] = s["V"][order, :] if left else s["V"][:, order]
                            s[q] = new


def test_batched_shampoo_groups_blocks_by_shape():
    from recsys_matta.train.shampoo import BlockSOAP

    model = nn.Sequential(nn.Linear(6, 11), nn.ReLU(), nn.Linear(11, 1))
    opt = BlockSOAP(model.parameters(), 0.1, (0.9, 0.95), 0.9, 1e-8, 0.0, 3, max_dim=4)
    # (11, 6) -> rows 4+4+3 x cols 4+2; (1, 11) -> cols 4+4+3; biases go to AdamW
    assert sorted((g.shape, len(g.blocks)) for g in opt.groups) == [
        ((1, 3), 1), ((1, 4), 2), ((3, 2), 1), ((3, 4), 1), ((4, 2), 2), ((4, 4), 2)
    ]
    assert [tuple(p.shape) for p in opt.vectors] == [(11,), (1,)]


@pytest.mark.parametrize("fused", [True, False], ids=["fused-adam", "foreach-adam"])
def test_batched_shampoo_equals_a_plain_reference_with_blocks_and_refreshes(fused, monkeypatch):
    """Square blocks (no degenerate eigenspaces, so the eigenbases are unique up to sign):
    weights (8, 8) and (4, 8) cut into 4 x 4 blocks, float64, 9 steps with a refresh every 3,
    the recorded gradients replayed through a plain one-block-at-a-time implementation; with
    torch's fused Adam kernel (CPU, CUDA) and with the foreach ops (other devices)."""
    from recsys_matta.train import shampoo
    from recsys_matta.train.shampoo import BlockSOAP

    if not fused:
        monkeypatch.setattr(shampoo, "_FUSED_ADAM_DEVICES", ())
        monkeypatch.setattr(torch, "_fused_adam_", None)  # calling it would fail the test
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    ref = copy.deepcopy(model)
    start = copy.deepcopy(model)
    opt = BlockSOAP(model.parameters(), lr=0.05, betas=(0.9, 0.95), shampoo_beta=0.9, eps=1e-8,
                    weight_decay=0.0, frequency=3, max_dim=4)  # fmt: skip
    x, y = _problem()
    x, y = x[:, :8].double(), y.double()
    grads = []
    for _ in range(9):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
    _reference_soap(list(ref.parameters()), grads, 0.05, (0.9, 0.95), 0.9, 1e-8, 3, 4)
    mine, theirs, before = (dict(m.named_parameters()) for m in (model, ref, start))
    for name in ("0.weight", "2.weight"):
        assert torch.allclose(mine[name], theirs[name], atol=1e-9, rtol=0), name
        assert float((mine[name] - before[name]).abs().max()) > 0.05  # 9 steps of lr 0.05 moved it


def test_shampoo_state_of_another_shape_is_refused():
    a = Shampoo(nn.Linear(4, 3).parameters(), OptimConfig())
    b = Shampoo(nn.Linear(5, 3).parameters(), OptimConfig())
    with pytest.raises(ValueError, match="blocks"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="shampoo_impl='heavyball'"):
        a.load_state_dict({**a.state_dict(), "impl": "heavyball"})
    state = a.state_dict()
    state["soap"]["vectors"].append({})
    with pytest.raises(ValueError, match="2 1-D parameters, the model needs 1"):
        Shampoo(nn.Linear(4, 3).parameters(), OptimConfig()).load_state_dict(state)


def test_factor_every_skips_factor_updates_between_its_steps():
    """factor_every=3: step 1 is the same as factor_every=1 (factors = the first gradient's),
    steps 2 and 4 leave L and R untouched, step 3 (and 6) updates them by one EMA step with
    beta_s**3 (the horizon in steps of factor_every=1)."""
    from recsys_matta.train.shampoo import BlockSOAP

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1))
    every = copy.deepcopy(model)
    kw = dict(lr=0.05, betas=(0.9, 0.95), shampoo_beta=0.9, eps=1e-8, weight_decay=0.0, frequency=100, max_dim=8)
    opt, ref = BlockSOAP(model.parameters(), **kw, factor_every=3), BlockSOAP(every.parameters(), **kw)
    x, y = _problem()
    x = x[:, :6]

    def grad_step(m, o):
        o.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(m(x).squeeze(1), y).backward()
        grads = [p.grad.clone() for p in m.parameters() if p.dim() == 2]
        o.step()
        return grads

    def factors(o):
        return [(g.state["L"].clone(), g.state["R"].clone()) for g in o.groups]

    grad_step(model, opt), grad_step(every, ref)
    for a, b in zip(model.parameters(), every.parameters()):
        assert torch.equal(a, b)
    for (la, ra), (lb, rb) in zip(factors(opt), factors(ref)):
        assert torch.equal(la, lb) and torch.equal(ra, rb)
    for t in range(2, 7):
        before = factors(opt)
        grads = grad_step(model, opt)
        after = factors(opt)
        for (lb, rb), (la, ra), g in zip(before, after, grads):
            if t % 3:
                assert torch.equal(la, lb) and torch.equal(ra, rb), t
            else:
                beta = 0.9**3
                assert torch.allclose(la, beta * lb + (1 - beta) * g @ g.T, atol=1e-6), t
                assert torch.allclose(ra, beta * rb + (1 - beta) * g.T @ g, atol=1e-6), t


def test_factor_every_reaches_the_shampoo_config():
    sh = Shampoo(nn.Linear(4, 3).parameters(), OptimConfig(factor_every=4))
    assert sh.soap.factor_every == 4
    with pytest.raises(ValueError):
        OptimConfig(factor_every=0)


def test_bf16_rotations_track_the_float32_update():
    """rotation_dtype=bfloat16 rounds only the rotations: from the same state (10 float32 steps
    on minibatches, a refresh every 3), one more step moves the weights as the float32 rotations
    do, to bf16 precision; the state stays float32. (Not from the first steps: with factors of
    one gradient, its rotation G' is diagonal up to rounding, and Adam's sign-like first steps
    scale that rounding up to full steps, in float32 as in bf16.)"""
    from recsys_matta.train.shampoo import BlockSOAP

    torch.manual_seed(0)
    model = nn.Linear(64, 64)  # one 64 x 64 block: the smallest that rotates in bf16
    kw = dict(lr=0.01, betas=(0.9, 0.95), shampoo_beta=0.9, eps=1e-8, weight_decay=0.0, frequency=3, max_dim=64)
    exact = BlockSOAP(model.parameters(), **kw)
    x = torch.randn(2048, 64)
    y = x @ torch.randn(64, 64) + 0.5 * torch.randn(2048, 64)

    def step(m, o, rows):
        o.zero_grad()
        nn.functional.mse_loss(m(x[rows]), y[rows]).backward()
        o.step()

    for i in range(10):
        step(model, exact, slice(128 * i, 128 * (i + 1)))
    other = copy.deepcopy(model)
    fast = BlockSOAP(other.parameters(), **kw, rotation_dtype=torch.bfloat16)
    fast.load_state_dict(copy.deepcopy(exact.state_dict()))
    start = model.weight.detach().clone()
    step(model, exact, slice(1280, 1408)), step(other, fast, slice(1280, 1408))
    moved = (model.weight - start).detach()
    assert float(moved.abs().max()) > 0.005
    assert float((other.weight - model.weight).norm() / moved.norm()) < 0.02
    assert all(t.dtype == torch.float32 for g in fast.groups for t in g.state.values())
    assert all(q.dtype == torch.bfloat16 for g in fast.groups for q in g.bases)
    narrow = nn.Linear(64, 63)  # a 63 x 64 block: a side < 64 rotates in float32 (faster there on CPU)
    small = BlockSOAP(narrow.parameters(), **kw, rotation_dtype=torch.bfloat16)
    narrow(x).sum().backward()
    small.step()
    assert all(q.dtype == torch.float32 for g in small.groups for q in g.bases)
    configured = Shampoo(nn.Linear(4, 3).parameters(), OptimConfig(rotation_dtype="bfloat16"))
    assert configured.soap.rotation_dtype == torch.bfloat16


def test_bf16_factor_products_round_only_the_factors():
    """factor_dtype=bfloat16 rounds the products G G^T, G^T G: over steps that update the factors
    between two refreshes, the factors track the float32 ones to bf16 precision, the weights move
    exactly as theirs (the basis is the same until the next refresh) and the state stays
    float32; a block with a side < 64 keeps float32 products."""
    from recsys_matta.train.shampoo import BlockSOAP

    torch.manual_seed(0)
    model = nn.Linear(64, 64)
    kw = dict(lr=0.01, betas=(0.9, 0.95), shampoo_beta=0.9, eps=1e-8, weight_decay=0.0, frequency=10, max_dim=64)
    exact = BlockSOAP(model.parameters(), **kw)
    other = copy.deepcopy(model)
    low = BlockSOAP(other.parameters(), **kw, factor_dtype=torch.bfloat16)
    x = torch.randn(1024, 64)
    y = x @ torch.randn(64, 64) + 0.5 * torch.randn(1024, 64)
    for i in range(8):  # steps 1-8: factors updated on 2-8, no refresh (frequency 10)
        for m, o in ((model, exact), (other, low)):
            o.zero_grad()
            nn.functional.mse_loss(m(x[128 * i : 128 * (i + 1)]), y[128 * i : 128 * (i + 1)]).backward()
            o.step()
        assert torch.equal(model.weight, other.weight), i  # same basis, same gradients: same update
    (left, right), (left_low, right_low) = exact.factors(model.weight), low.factors(other.weight)
    for a, b in ((left, left_low), (right, right_low)):
        rel = float((a - b).norm() / a.norm())
        assert 1e-6 < rel < 1e-2, rel  # rounded (not the float32 products), to bf16 precision
        assert b.dtype == torch.float32
    narrow = nn.Linear(64, 63)
    small = BlockSOAP(narrow.parameters(), **kw, factor_dtype=torch.bfloat16)
    net2 = copy.deepcopy(narrow)
    ref = BlockSOAP(net2.parameters(), **kw)
    for _ in range(2):
        for m, o in ((narrow, small), (net2, ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    assert torch.equal(small.factors(narrow.weight)[0], ref.factors(net2.weight)[0])
    configured = Shampoo(nn.Linear(4, 3).parameters(), OptimConfig(factor_dtype="bfloat16"))
    assert configured.soap.factor_dtype == torch.bfloat16


@pytest.mark.parametrize("fast", [False, True])
def test_auto_low_precision_follows_the_device(monkeypatch, fast):
    """optim.rotation_dtype / factor_dtype `auto`: bf16 on a CPU with AVX512-BF16 or AMX, the
    weights' float32 elsewhere; the explicit values hold on any CPU."""
    from recsys_matta.train.optim import fast_bf16_matmul, low_precision_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: fast)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert fast_bf16_matmul(cpu) is fast
    want = torch.bfloat16 if fast else None
    assert low_precision_dtype("auto", cpu) is want
    assert low_precision_dtype("float32", cpu) is None and low_precision_dtype("bfloat16", cpu) is torch.bfloat16
    sh = Shampoo(nn.Linear(4, 3).parameters(), OptimConfig(rotation_dtype="auto", factor_dtype="auto"))
    assert sh.soap.rotation_dtype is want and sh.soap.factor_dtype is want
    sh = Shampoo(nn.Linear(4, 3).parameters(), OptimConfig(rotation_dtype="float32", factor_dtype="bfloat16"))
    assert sh.soap.rotation_dtype is None and sh.soap.factor_dtype is torch.bfloat16


@pytest.mark.parametrize("fused", [True, False], ids=["fused-adam", "foreach-adam"])
def test_batched_shampoo_steps_1d_parameters_as_adamw(fused, monkeypatch):
    """The biases ride in the Shampoo step's Adam pass; their trajectory is torch AdamW's
    (float64, weight decay on; fused kernel and foreach ops alike), and a state saved before the
    fold (a torch AdamW state under "adam") resumes to the same next step."""
    from recsys_matta.train import shampoo
    from recsys_matta.train.shampoo import BlockSOAP

    if not fused:
        monkeypatch.setattr(shampoo, "_FUSED_ADAM_DEVICES", ())
        monkeypatch.setattr(torch, "_fused_adam_", None)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1)).double()
    biases = [copy.deepcopy(p) for p in model.parameters() if p.dim() == 1]
    start = [b.detach().clone() for b in biases]
    kw = dict(lr=0.05, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt = BlockSOAP(model.parameters(), **kw, shampoo_beta=0.9, frequency=3, max_dim=8)
    adamw = torch.optim.AdamW(biases, **kw, foreach=False)
    x, y = _problem()
    x, y = x[:, :6].double(), y.double()
    for _ in range(7):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y).backward()
        for b, p in zip(biases, opt.vectors):
            b.grad = p.grad.clone()
        opt.step(), adamw.step()
        for b, p in zip(biases, opt.vectors):
            assert torch.allclose(b, p, atol=1e-12, rtol=0)
    assert all(float((b - s).abs().max()) > 0.05 for b, s in zip(biases, start))  # 7 steps of lr 0.05 moved them

    old = opt.state_dict()
    old.pop("vectors")
    old["adam"] = adamw.state_dict()
    resumed = BlockSOAP(copy.deepcopy(model).parameters(), **kw, shampoo_beta=0.9, frequency=3, max_dim=8)
    resumed.load_state_dict(old)
    for a, b in zip(resumed.vector_state, opt.vector_state):
        # the same moments to the last bit or so: the fused kernel may round V one ulp apart from
        # torch AdamW's (1.4e-16 relative on an AVX512 CPU, bit-equal on an AVX2 one)
        assert torch.allclose(a["M"], b["M"], rtol=1e-14, atol=0) and torch.allclose(a["V"], b["V"], rtol=1e-14, atol=0)


def _two_equal_weights(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(6, 6, bias=False), nn.Linear(6, 6, bias=False), nn.Linear(6, 6)


def test_block_soap_steps_a_weight_whose_group_mate_has_no_gradient():
    """Blocks of one shape from several weights share one stacked group; a weight with a
    gradient is stepped exactly as if alone when another of its shape has none, the one without
    is left alone (as torch.optim does), and its first gradient, 5 steps later, is
    bias-corrected from its own first step: the same update as a fresh optimizer's first."""
    from recsys_matta.train.shampoo import BlockSOAP

    kw = dict(lr=0.05, betas=(0.9, 0.95), shampoo_beta=0.9, eps=1e-8, weight_decay=0.0, frequency=3, max_dim=8)
    used, unused, head = _two_equal_weights()
    alone, alone_head = copy.deepcopy(used), copy.deepcopy(head)
    late, late_head = copy.deepcopy(unused), copy.deepcopy(head)  # a fresh optimizer's first step of `unused`
    opt = BlockSOAP([*used.parameters(), *unused.parameters(), *head.parameters()], **kw)
    ref = BlockSOAP([*alone.parameters(), *alone_head.parameters()], **kw)
    shared = {id(used.weight), id(unused.weight), id(head.weight)}
    assert any({id(b.param) for b in g.blocks} == shared for g in opt.groups)  # one stacked group
    x, y = _problem()
    x = x[:, :6]
    frozen = unused.weight.detach().clone()
    for _ in range(5):
        for o, net in ((opt, (used, head)), (ref, (alone, alone_head))):
            o.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(net[1](net[0](x)).sum(1), y).backward()
            o.step()
        assert torch.equal(used.weight, alone.weight) and torch.equal(head.weight, alone_head.weight)
    assert torch.equal(unused.weight, frozen)  # no gradient: not moved
    assert opt.factors(unused.weight) is None and opt.factors(used.weight) is not None

    opt.zero_grad()
    nn.functional.binary_cross_entropy_with_logits(head(unused(x)).sum(1), y).backward()
    grad = unused.weight.grad.clone()
    opt.step()
    fresh = BlockSOAP(late.parameters(), **kw)
    late.weight.grad = grad
    fresh.step()
    assert torch.allclose(unused.weight, late.weight, atol=1e-7, rtol=0)
    assert float((unused.weight - frozen).abs().max()) > 0.01


def test_block_soap_state_loads_onto_the_parameters_device_and_old_states_resume():
    """Checkpoints are read onto the CPU: load_state_dict moves every tensor to the parameters'
    device (here `meta`, standing in for CUDA); a state saved before per-block step counts
    (no `block_steps` / `vector_steps`) resumes to the same next step."""
    from recsys_matta.train.shampoo import BlockSOAP

    kw = dict(lr=0.05, betas=(0.9, 0.95), shampoo_beta=0.9, eps=1e-8, weight_decay=0.0, frequency=3, max_dim=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1))
    opt = BlockSOAP(model.parameters(), **kw)
    x, y = _problem()

    def step(o, m):
        o.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(m(x[:, :6]).squeeze(1), y).backward()
        o.step()

    for _ in range(4):
        step(opt, model)
    state = opt.state_dict()
    assert state["vector_steps"] == [4, 4] and all(g["block_steps"] == [4] * g["blocks"] for g in state["groups"])

    on_meta = BlockSOAP(copy.deepcopy(model).to("meta").parameters(), **kw)
    on_meta.load_state_dict(copy.deepcopy(state))
    tensors = [v for g in on_meta.groups for v in g.state.values()]
    tensors += [v for s in on_meta.vector_state for v in s.values()]
    assert tensors and all(t.device.type == "meta" for t in tensors)

    old = copy.deepcopy(state)
    old.pop("vector_steps")
    for g in old["groups"]:
        g.pop("block_steps")
    twin = copy.deepcopy(model)
    resumed = BlockSOAP(twin.parameters(), **kw)
    resumed.load_state_dict(old)
    for _ in range(3):  # across a refresh (step 6)
        step(opt, model), step(resumed, twin)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
