"""Nested GAU: shapes, a hand-computed tiny case, slice equivalence, gradient locality."""

import math

import torch
import torch.nn.functional as F

from recsys_matta.modules import NestedGAU


def _silu(x: float) -> float:
    return x / (1.0 + math.exp(-x))


def _random_gau(seed: int) -> NestedGAU:
    torch.manual_seed(seed)
    gau = NestedGAU(3, 5, 4, 8, 2, 3)
    with torch.no_grad():
        for p in gau.parameters():  # W_o starts at zero: make every parameter matter
            p.normal_()
    return gau


def test_fresh_block_is_identity():
    gau = NestedGAU(3, 5, 4, 8, 2, 3)
    x = torch.randn(2, 4, 5)
    assert torch.equal(gau.forward_at(x, (8, 3)), x)


def test_shapes():
    gau = NestedGAU(4, 8, 6, 12, 3, 5)
    y_s, y_ta = gau(torch.randn(2, 7, 4), torch.randn(2, 7, 8))
    assert y_s.shape == (2, 7, 4) and y_ta.shape == (2, 7, 8)
    assert gau.forward_at(torch.randn(3, 5, 6), (9, 4)).shape == (3, 5, 6)


def test_hand_computed_student_block():
    # Student (d, e, s) = (2, 2, 1) inside a TA of (3, 3, 2); the TA-only entries are random and
    # must not matter to the Student.
    torch.manual_seed(0)
    gau = NestedGAU(2, 3, 2, 3, 1, 2)
    eye2 = torch.eye(2)
    with torch.no_grad():
        for p in gau.parameters():
            p.normal_()
        gau.norm.eps = 0.0
        gau.norm.weight[:2] = 1.0
        gau.norm.bias[:2] = 0.0
        for lin in (gau.to_u, gau.to_v, gau.to_out):
            lin.weight[:2, :2] = eye2
            lin.bias[:2] = 0.0
        gau.to_z.weight[:1, :2] = torch.tensor([[1.0, 0.0]])
        gau.to_z.bias[:1] = 0.0
        gau.gamma[:, :1] = 1.0
        gau.beta[:, :1] = 0.0
    x = torch.tensor([[[1.0, -1.0], [-3.0, 3.0]]])  # (B=1, n=2, d=2)
    # LayerNorm: h = [[1, -1], [-1, 1]]; u = v = silu(h); z = silu(h[:, 0]) = [a, c]
    a, c = _silu(1.0), _silu(-1.0)
    # q = k = z; A = relu(z z^T / 2)^2 = [[a^4/4, 0], [0, c^4/4]] (a c < 0)
    # token 0: u0 * A00 v0 = a^4/4 * [a*a, c*c]; token 1: u1 * A11 v1 = c^4/4 * [c*c, a*a]
    expected = torch.tensor(
        [[[1.0 + a**6 / 4, -1.0 + a**4 * c**2 / 4], [-3.0 + c**6 / 4, 3.0 + c**4 * a**2 / 4]]]
    )
    y_s, _ = gau(x, torch.randn(1, 2, 3))
    torch.testing.assert_close(y_s, expected, rtol=1e-6, atol=1e-6)


def _explicit_gau(x, gau: NestedGAU, d: int, e: int, s: int) -> torch.Tensor:
    """The GAU formula on separately sliced copies of the weights."""

    def lin(layer, out, inp):
        return layer.weight[:out, :inp].detach().clone(), layer.bias[:out].detach().clone()

    n = x.shape[1]
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    h = (x - mu) / torch.sqrt(var + gau.norm.eps) * gau.norm.weight[:d].detach() + gau.norm.bias[:d].detach()
    wu, bu = lin(gau.to_u, e, d)
    wv, bv = lin(gau.to_v, e, d)
    wz, bz = lin(gau.to_z, s, d)
    wo, bo = lin(gau.to_out, d, e)
    u, v, z = F.silu(h @ wu.T + bu), F.silu(h @ wv.T + bv), F.silu(h @ wz.T + bz)
    g, b = gau.gamma[:, :s].detach().clone(), gau.beta[:, :s].detach().clone()
    q, k = z * g[0] + b[0], z * g[1] + b[1]
    att = torch.relu(torch.einsum("bis,bjs->bij", q, k) / n) ** 2
    return x + (u * torch.einsum("bij,bje->bie", att, v)) @ wo.T + bo


def test_student_and_ta_match_the_explicit_formula():
    gau = _random_gau(1)
    x_ta = torch.randn(2, 6, 5)
    x_s = x_ta[..., :3]
    y_s, y_ta = gau(x_s, x_ta)
    torch.testing.assert_close(y_s, _explicit_gau(x_s, gau, 3, 4, 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_ta, _explicit_gau(x_ta, gau, 5, 8, 3), rtol=1e-5, atol=1e-5)
    mixed = gau.forward_at(x_ta[..., :4], (8, 2))  # a Mix'n'Match sub-block
    torch.testing.assert_close(mixed, _explicit_gau(x_ta[..., :4], gau, 4, 8, 2), rtol=1e-5, atol=1e-5)


def test_student_loss_gradient_touches_only_student_slices():
    gau = _random_gau(2)
    y_s, _ = gau(torch.randn(2, 6, 3), torch.randn(2, 6, 5))
    y_s.square().sum().backward()
    blocks = {
        "to_u.weight": (4, 3), "to_v.weight": (4, 3), "to_z.weight": (2, 3), "to_out.weight": (3, 4),
        "to_u.bias": (4,), "to_v.bias": (4,), "to_z.bias": (2,), "to_out.bias": (3,),
        "norm.weight": (3,), "norm.bias": (3,), "gamma": (2, 2), "beta": (2, 2),
    }  # fmt: skip
    for name, p in gau.named_parameters():
        idx = tuple(slice(0, k) for k in blocks[name])
        if name == "gamma" or name == "beta":
            idx = (slice(None), slice(0, blocks[name][1]))
        inside = torch.zeros_like(p, dtype=torch.bool)
        inside[idx] = True
        assert torch.all(p.grad[~inside] == 0), name
        assert p.grad[inside].abs().sum() > 0, name


def test_count_and_extract():
    gau = _random_gau(3)
    # LN 2*3 + u, v 2*(4*3 + 4) + z (2*3 + 2) + gamma/beta 4*2 + out (3*4 + 3) = 6 + 32 + 8 + 8 + 15
    assert NestedGAU.count(3, (4, 2)) == 69
    assert NestedGAU.count(5, (8, 3)) == sum(p.numel() for p in gau.parameters())
    small = gau.extract(4, (6, 3))
    assert sum(p.numel() for p in small.parameters()) == NestedGAU.count(4, (6, 3))
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(small.forward_at(x, (6, 3)), gau.forward_at(x, (6, 3)), rtol=1e-6, atol=1e-6)
