"""Nested MLP, residual (depth) blocks, LayerNorm and dense tokens."""

import torch
import torch.nn.functional as F

from recsys_matta.modules import NestedDenseTokens, NestedLayerNorm, NestedMLP, ResidualBlock


def _mlp(seed: int = 0) -> NestedMLP:
    torch.manual_seed(seed)
    mlp = NestedMLP(4, 6, [3, 2], [5, 4], extra_blocks=2)
    with torch.no_grad():
        for p in mlp.parameters():
            p.normal_()  # fc2 of residual blocks starts at 0: make the blocks matter
    return mlp


def _sliced(layer, out: int, inp: int):
    return layer.weight[:out, :inp].detach().clone(), layer.bias[:out].detach().clone()


def test_student_and_ta_match_explicit_slices():
    mlp = _mlp()
    x_ta = torch.randn(5, 6)
    x_s = x_ta[:, :4]
    y_s, y_ta = mlp(x_s, x_ta)
    assert y_s.shape == (5, 1) and y_ta.shape == (5, 1)

    w1, b1 = _sliced(mlp.layers[0], 3, 4)
    w2, b2 = _sliced(mlp.layers[1], 2, 3)
    wo, bo = _sliced(mlp.out_layer, 1, 2)
    h = F.relu(F.relu(x_s @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(y_s, h @ wo.T + bo, rtol=1e-5, atol=1e-5)

    w1, b1 = _sliced(mlp.layers[0], 5, 6)
    w2, b2 = _sliced(mlp.layers[1], 4, 5)
    h = F.relu(F.relu(x_ta @ w1.T + b1) @ w2.T + b2)
    for blk in mlp.extra:  # TA-only residual blocks
        f1, c1 = _sliced(blk.fc1, 4, 4)
        f2, c2 = _sliced(blk.fc2, 4, 4)
        h = h + F.relu(h @ f1.T + c1) @ f2.T + c2
    wo, bo = _sliced(mlp.out_layer, 1, 4)
    torch.testing.assert_close(y_ta, h @ wo.T + bo, rtol=1e-5, atol=1e-5)


def test_fresh_residual_block_is_identity():
    blk = ResidualBlock(4)
    h = torch.randn(3, 4)
    assert torch.equal(blk(h), h)
    assert torch.equal(blk.forward_at(h[:, :2]), h[:, :2])


def test_student_gradient_skips_ta_only_blocks():
    mlp = _mlp()
    y_s, _ = mlp(torch.randn(5, 4), torch.randn(5, 6))
    y_s.sum().backward()
    for blk in mlp.extra:
        assert all(p.grad is None for p in blk.parameters())
    g = mlp.layers[1].weight.grad
    assert torch.all(g[2:, :] == 0) and torch.all(g[:, 3:] == 0) and g[:2, :3].abs().sum() > 0


def test_count_and_extract():
    mlp = _mlp()
    # 6->5: 35, 5->4: 24, 2 residual blocks at 4: 2 * 2 * 20, 4->1: 5
    assert NestedMLP.count(6, [5, 4], 2) == 35 + 24 + 80 + 5 == sum(p.numel() for p in mlp.parameters())
    # Student: 4->3: 15, 3->2: 8, 2->1: 3
    assert NestedMLP.count(4, [3, 2], 0) == 26
    small = mlp.extract(5, [5, 2], [1])
    assert sum(p.numel() for p in small.parameters()) == NestedMLP.count(5, [5, 2], 1)
    x = torch.randn(3, 5)
    torch.testing.assert_close(
        small.forward_at(x, [5, 2], [0]), mlp.forward_at(x, [5, 2], [1]), rtol=1e-6, atol=1e-6
    )


def test_nested_layer_norm_reads_prefix_params():
    ln = NestedLayerNorm(2, 4)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([2.0, 3.0, 5.0, 7.0]))
        ln.bias.copy_(torch.tensor([1.0, -1.0, 0.5, 0.25]))
    ln.eps = 0.0
    y_s, y_ta = ln(torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
    # Student: normalised [1, -1] -> [2 + 1, -3 - 1]; TA: [-1, -1, 1, 1] -> [-1, -4, 5.5, 7.25]
    torch.testing.assert_close(y_s, torch.tensor([[3.0, -4.0]]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y_ta, torch.tensor([[-1.0, -4.0, 5.5, 7.25]]), rtol=1e-6, atol=1e-6)


def test_dense_tokens_hand_computed():
    tok = NestedDenseTokens(2, 1, 3)
    with torch.no_grad():
        tok.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]]))
        tok.bias.copy_(torch.tensor([[0.0, 0.5, 1.0], [2.0, 2.0, 2.0]]))
    dense = torch.tensor([[2.0, 3.0]])
    assert tok.forward_at(dense, 3).tolist() == [[[2.0, 4.5, 7.0], [-1.0, 2.0, 5.0]]]
    assert tok.forward_at(dense, 1).tolist() == [[[2.0], [-1.0]]]
