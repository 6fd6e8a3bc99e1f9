import copy

import pytest
import torch
from torch import nn

from recsys_matta.specs.config import OptimConfig
from recsys_matta.train.optim import DenseOptimizer, ModelOptimizer, Shampoo, split_parameters


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
        lambda p: Shampoo(p, OptimConfig(lr=1e-2, precondition_frequency=5, start_preconditioning_step=10)),
        lambda p: DenseOptimizer(p, OptimConfig(dense="adam", lr=1e-2)),
        lambda p: DenseOptimizer(p, OptimConfig(dense="adagrad", lr=5e-2)),
    ],
    ids=["shampoo", "shampoo-delayed", "adam", "adagrad"],
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
    return all(not s for s in sh.soap.state.values())


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

    def forward(self, ids):
        return self.head(self.ebc(ids)).squeeze(-1)


def test_split_parameters_and_rowwise_adagrad_touches_only_used_rows():
    m = _WithTables()
    emb, dense = split_parameters(m)
    assert [p.shape for p in emb] == [torch.Size([10, 4])]
    assert len(dense) == 2
    opt = ModelOptimizer(m, OptimConfig(dense="adam", lr=1e-2, embedding_lr=0.1))
    before = m.ebc.weight.detach().clone()
    loss = m(torch.tensor([1, 3])).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = (m.ebc.weight != before).any(dim=1)
    assert changed.tolist() == [i in (1, 3) for i in range(10)]
