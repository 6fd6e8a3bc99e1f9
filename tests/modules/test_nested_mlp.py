"""Flat nested blocks (dense layers, residual depth blocks), the block registry, LayerNorm and
dense tokens."""

import torch
import torch.nn.functional as F

from recsys_matta.modules import BLOCK_TYPES, NestedDense, NestedDenseTokens, NestedLayerNorm, ResidualBlock
from recsys_matta.specs.model import ResidualBlockConfig


def _layers(seed: int = 0) -> tuple[NestedDense, NestedDense, list[ResidualBlock]]:
    """4/6 -> 3/5 -> 2/4 and two TA-only residual blocks at 4, random weights."""
    torch.manual_seed(seed)
    l1, l2 = NestedDense(4, 6, 3, 5), NestedDense(3, 5, 2, 4)
    blocks = [ResidualBlock.build(ResidualBlockConfig(), 4, 4) for _ in range(2)]
    with torch.no_grad():
        for m in (l1, l2, *blocks):
            for p in m.parameters():
                p.normal_()  # fc2 of residual blocks starts at 0: make the blocks matter
    return l1, l2, blocks


def _sliced(layer, out: int, inp: int):
    return layer.weight[:out, :inp].detach().clone(), layer.bias[:out].detach().clone()


def test_dense_layers_and_residual_blocks_match_explicit_slices():
    l1, l2, blocks = _layers()
    x_ta = torch.randn(5, 6)
    x_s = x_ta[:, :4]
    h_s = l2.forward_at(l1.forward_at(x_s, (3,)), (2,))  # the Student skips the TA-only blocks
    w1, b1 = _sliced(l1.linear, 3, 4)
    w2, b2 = _sliced(l2.linear, 2, 3)
    torch.testing.assert_close(h_s, F.relu(F.relu(x_s @ w1.T + b1) @ w2.T + b2), rtol=1e-5, atol=1e-5)

    h = l2.forward_at(l1.forward_at(x_ta, (5,)), (4,))
    for blk in blocks:
        h = blk.forward_at(h, ())
    w1, b1 = _sliced(l1.linear, 5, 6)
    w2, b2 = _sliced(l2.linear, 4, 5)
    ref = F.relu(F.relu(x_ta @ w1.T + b1) @ w2.T + b2)
    for blk in blocks:
        f1, c1 = _sliced(blk.fc1, 4, 4)
        f2, c2 = _sliced(blk.fc2, 4, 4)
        ref = ref + F.relu(ref @ f1.T + c1) @ f2.T + c2
    torch.testing.assert_close(h, ref, rtol=1e-5, atol=1e-5)


def test_fresh_residual_block_is_identity():
    blk = ResidualBlock(4)
    h = torch.randn(3, 4)
    assert torch.equal(blk(h), h)
    assert torch.equal(blk.forward_at(h[:, :2]), h[:, :2])


def test_student_gradient_stays_in_its_block():
    l1, l2, _ = _layers()
    l2.forward_at(l1.forward_at(torch.randn(5, 4), (3,)), (2,)).sum().backward()
    g = l2.linear.weight.grad
    assert torch.all(g[2:, :] == 0) and torch.all(g[:, 3:] == 0) and g[:2, :3].abs().sum() > 0


def test_count_out_features_and_extract():
    l1, _, blocks = _layers()
    assert NestedDense.count(6, (5,)) == 35 == sum(p.numel() for p in l1.parameters())
    assert NestedDense.count(4, (3,)) == 15 and NestedDense.out_features(4, (3,)) == 3
    assert ResidualBlock.count(4) == 40 == sum(p.numel() for p in blocks[0].parameters())
    assert ResidualBlock.out_features(3) == 3
    small, res = l1.extract(5, (2,)), blocks[1].extract(2)
    assert sum(p.numel() for p in small.parameters()) == NestedDense.count(5, (2,))
    assert sum(p.numel() for p in res.parameters()) == ResidualBlock.count(2)
    x = torch.randn(3, 5)
    torch.testing.assert_close(
        res.forward_at(small.forward_at(x, (2,))), blocks[1].forward_at(l1.forward_at(x, (2,))), rtol=1e-6, atol=1e-6
    )


def test_every_block_type_is_registered_with_the_contract():
    from recsys_matta.specs.model import DenseBlockConfig, GAUBlockConfig

    configs = {"gau": GAUBlockConfig(expansion=(4, 8), shared=(2, 3)), "dense": DenseBlockConfig(width=(3, 5)),
               "residual": ResidualBlockConfig()}  # fmt: skip
    assert set(BLOCK_TYPES) == set(configs)
    for kind, cfg in configs.items():
        block = BLOCK_TYPES[kind].build(cfg, 4, 6, "ta_fan")
        for name in ("forward_at", "count", "out_features", "extract"):
            assert callable(getattr(block, name)), (kind, name)
        x = torch.randn(2, 3, 6) if cfg.stage == "tokens" else torch.randn(2, 6)
        y = block.forward_at(x, cfg.wide)
        assert y.shape[-1] == BLOCK_TYPES[kind].out_features(6, cfg.wide)


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
