"""M-nested Dense: paper Algorithm 2, parameter sharing and gradient locality."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import recsys_matta.modules.nested_linear as nested_linear_mod
from recsys_matta.modules import MNestedLinear

M_S, M_TA, N_S, N_TA = 3, 5, 2, 4


def _layer(share: bool = True, seed: int = 0) -> MNestedLinear:
    torch.manual_seed(seed)
    layer = MNestedLinear(M_S, M_TA, N_S, N_TA, share_params=share)
    with torch.no_grad():
        layer.bias.normal_()  # biases start at 0; make them matter
        if layer.student_bias is not None:
            layer.student_bias.normal_()
    return layer


def test_hand_computed_student_and_ta_outputs():
    layer = MNestedLinear(2, 3, 1, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        layer.bias.copy_(torch.tensor([10.0, 20.0]))
    y_s, y_ta = layer(torch.tensor([[1.0, -1.0]]), torch.tensor([[1.0, -1.0, 2.0]]))
    # Student: [1, -1] . [1, 2] + 10 = 9;  TA: [1 - 2 + 6 + 10, 4 - 5 + 12 + 20] = [15, 31]
    assert y_s.tolist() == [[9.0]]
    assert y_ta.tolist() == [[15.0, 31.0]]


def test_algorithm2_block_formula():
    layer = _layer()
    torch.manual_seed(1)
    x_ta = torch.randn(6, M_TA)
    w, b = layer.weight.detach(), layer.bias.detach()
    w_s = w[:N_S, :M_S].clone()  # Student block
    w_1 = w[:N_S, M_S:].clone()  # TA-only inputs -> Student outputs
    w_2 = w[N_S:, :].clone()  # all inputs -> TA-only outputs
    i_ta0, i_extra = x_ta[:, :M_S].clone(), x_ta[:, M_S:].clone()
    expected = torch.cat([i_ta0 @ w_s.T + i_extra @ w_1.T, x_ta @ w_2.T], dim=1) + b
    _, y_ta = layer(x_ta[:, :M_S], x_ta)
    torch.testing.assert_close(y_ta, expected, rtol=1e-6, atol=1e-6)


def test_student_equals_plain_linear_holding_ws():
    layer = _layer()
    plain = nn.Linear(M_S, N_S)
    with torch.no_grad():
        plain.weight.copy_(layer.weight[:N_S, :M_S])
        plain.bias.copy_(layer.bias[:N_S])
    x_s = torch.randn(7, M_S)
    y_s, _ = layer(x_s, torch.randn(7, M_TA))
    assert torch.equal(y_s, plain(x_s))
    assert torch.equal(layer.forward_at(x_s, N_S), plain(x_s))


def test_single_input_form_student_reads_prefix():
    layer = _layer()
    x = torch.randn(4, M_TA)
    y_s, y_ta = layer(x)
    assert torch.equal(y_s, F.linear(x[:, :M_S], layer.weight[:N_S, :M_S], layer.bias[:N_S]))
    assert torch.equal(y_ta, F.linear(x, layer.weight, layer.bias))


def test_forward_at_every_width_is_the_sliced_linear():
    layer = _layer()
    for m in range(1, M_TA + 1):
        for n in range(1, N_TA + 1):
            x = torch.randn(3, m)
            expected = x @ layer.weight[:n, :m].detach().T + layer.bias[:n].detach()
            torch.testing.assert_close(layer.forward_at(x, n), expected, rtol=1e-6, atol=1e-6)


def test_forward_at_passes_views_not_copies(monkeypatch):
    layer = _layer()
    seen = []
    real_linear = F.linear

    def spy(x, w, b=None):
        seen.append((w, b))
        return real_linear(x, w, b)

    monkeypatch.setattr(nested_linear_mod.F, "linear", spy)
    layer.forward_at(torch.randn(2, M_S), N_S)
    layer(torch.randn(2, M_S), torch.randn(2, M_TA))
    assert len(seen) == 3
    for w, b in seen:
        assert w.untyped_storage().data_ptr() == layer.weight.untyped_storage().data_ptr()
        assert b.untyped_storage().data_ptr() == layer.bias.untyped_storage().data_ptr()


def _span(t: torch.Tensor) -> tuple[int, int]:
    """[first, last] byte address a (possibly strided) tensor touches."""
    first = t.data_ptr()
    last = first + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) * t.element_size()
    return first, last


def test_student_params_are_views_into_ta_when_shared():
    layer = _layer(share=True)
    w_s, b_s = layer.student_params()
    assert w_s.untyped_storage().data_ptr() == layer.weight.untyped_storage().data_ptr()
    assert b_s.untyped_storage().data_ptr() == layer.bias.untyped_storage().data_ptr()
    lo, hi = _span(layer.weight)
    s_lo, s_hi = _span(w_s)
    assert lo == s_lo and s_hi <= hi  # the top-left block of W
    assert w_s.stride() == layer.weight.stride()
    # writing through the view changes the TA weight
    with torch.no_grad():
        w_s[1, 2] = 123.0
    assert layer.weight[1, 2].item() == 123.0
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]


def test_student_params_disjoint_when_not_shared():
    layer = _layer(share=False)
    w_s, b_s = layer.student_params()
    assert w_s.shape == (N_S, M_S) and b_s.shape == (N_S,)
    for s in (w_s, b_s):
        for t in (layer.weight, layer.bias):
            assert s.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
            (a_lo, a_hi), (b_lo, b_hi) = _span(s), _span(t)
            assert a_hi < b_lo or b_hi < a_lo
    assert sorted(n for n, _ in layer.named_parameters()) == ["bias", "student_bias", "student_weight", "weight"]
    x_s, x_ta = torch.randn(3, M_S), torch.randn(3, M_TA)
    y_s, y_ta = layer(x_s, x_ta)
    assert torch.equal(y_s, F.linear(x_s, layer.student_weight, layer.student_bias))
    assert torch.equal(y_ta, F.linear(x_ta, layer.weight, layer.bias))
    assert torch.equal(layer.forward_at(x_s, N_S, student=True), y_s)


def test_student_loss_gradient_touches_only_student_block():
    layer = _layer(share=True)
    torch.manual_seed(3)
    y_s, _ = layer(torch.randn(8, M_S), torch.randn(8, M_TA))
    (y_s**2).sum().backward()
    g, gb = layer.weight.grad, layer.bias.grad
    mask = torch.zeros(N_TA, M_TA, dtype=torch.bool)
    mask[:N_S, :M_S] = True
    assert torch.all(g[mask] != 0)
    assert torch.all(g[~mask] == 0)
    assert torch.all(gb[:N_S] != 0) and torch.all(gb[N_S:] == 0)


def test_student_loss_gradient_unshared_leaves_ta_untouched():
    layer = _layer(share=False)
    y_s, _ = layer(torch.randn(8, M_S), torch.randn(8, M_TA))
    y_s.sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    assert layer.student_weight.grad is not None and torch.all(layer.student_weight.grad != 0)


def test_ta_loss_gradient_reaches_the_whole_weight():
    layer = _layer()
    _, y_ta = layer(torch.randn(8, M_S), torch.randn(8, M_TA))
    y_ta.sum().backward()
    assert torch.all(layer.weight.grad != 0)


def test_extract_copies_the_block():
    layer = _layer()
    small = layer.extract(4, 3)
    assert small.weight.shape == (3, 4) and torch.equal(small.weight, layer.weight[:3, :4])
    assert small.weight.untyped_storage().data_ptr() != layer.weight.untyped_storage().data_ptr()
    assert MNestedLinear.count(4, 3) == 15 == sum(p.numel() for p in small.parameters())


def test_invalid_widths_raise():
    with pytest.raises(ValueError, match="student <= TA"):
        MNestedLinear(6, 5, 2, 4)
    layer = _layer()
    with pytest.raises(ValueError, match="from a"):
        layer.forward_at(torch.randn(2, M_TA + 1), 1)
    with pytest.raises(ValueError, match="unshared Student weight"):
        _layer(share=False).forward_at(torch.randn(2, M_TA), N_S, student=True)
