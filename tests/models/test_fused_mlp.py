"""The fused CPU ``Linear → LayerNorm → GELU`` block computes what the eager modules compute."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgm_pyro import native
from sgm_pyro.nn import MLP, fused

pytestmark = pytest.mark.usefixtures("native_kernels")  # built here (tests/conftest.py), state restored


def test_the_kernels_build_here():
    assert native.available(), f"the compiled kernels did not build: {native.error()}"


def block(k: int, n: int, seed: int = 0) -> tuple[nn.Linear, nn.LayerNorm]:
    torch.manual_seed(seed)
    lin, norm = nn.Linear(k, n), nn.LayerNorm(n)
    nn.init.normal_(norm.weight, 1.0, 0.3)  # away from the initial γ = 1, β = 0, so their gradients matter
    nn.init.normal_(norm.bias, 0.0, 0.5)
    nn.init.normal_(lin.bias, 0.0, 0.5)
    return lin, norm


@pytest.mark.parametrize("rows,k,n,scale", [(1, 3, 1, 1.0), (7, 5, 2, 1.0), (130, 33, 64, 1.0), (64, 784, 300, 1.0),
                                            (40, 16, 17, 30.0)])
def test_block_matches_eager_values_and_gradients(rows, k, n, scale):
    lin, norm = block(k, n)
    x = (torch.randn(rows, k) * scale).requires_grad_()
    g = torch.randn(rows, n)

    def grads(fn):
        for p in (x, *lin.parameters(), *norm.parameters()):
            p.grad = None
        y = fn()
        y.backward(g)
        return y.detach(), [p.grad.clone() for p in (x, *lin.parameters(), *norm.parameters())]

    y_ref, g_ref = grads(lambda: F.gelu(norm(lin(x))))
    assert fused.fusable(x, lin, norm, nn.GELU())
    y, g_fused = grads(lambda: fused.linear_layer_norm_gelu(x, lin, norm))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=2e-6)
    for name, a, b in zip(("x", "W", "b", "γ", "β"), g_fused, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(float(b.abs().max()), 1.0), msg=lambda m: f"d{name}: {m}")


def test_gelu_tails_and_the_normal_cdf():
    """Large |u| (where Φ saturates and the exponential underflows) and the rows' statistics."""
    h = torch.linspace(-40.0, 40.0, 2 * 4001).reshape(2, -1)  # wide rows: LayerNorm maps them to about ±1.7
    d = h.shape[1]
    zero, one = torch.zeros(d), torch.ones(d)
    for gamma in (one, 6.0 * one):  # γ = 6 puts u out to ±10.4
        y, mean, rstd = torch.ops.sgm_pyro_native.layer_norm_gelu(h, zero, gamma, zero, 1e-5)
        ref, m_ref, r_ref = torch.ops.aten.native_layer_norm(h, (d,), gamma, zero, 1e-5)
        torch.testing.assert_close(mean, m_ref.flatten(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(rstd, r_ref.flatten(), rtol=1e-5, atol=0)
        torch.testing.assert_close(y, F.gelu(ref), rtol=1e-5, atol=2e-6)
        assert torch.isfinite(y).all()


def test_mlp_uses_the_fused_blocks_and_gives_the_eager_result(monkeypatch):
    torch.manual_seed(1)
    net = MLP(49, (64, 32), 3, zero_last=False)
    for m in net:
        if isinstance(m, nn.LayerNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
    x = torch.randn(20, 1, 7, 7)

    def run(enabled: bool):
        native.set_enabled(enabled)
        net.zero_grad(set_to_none=True)
        y = net(x)
        y.square().sum().backward()
        return y.detach(), [p.grad.clone() for p in net.parameters()]

    calls, real = [], fused.linear_layer_norm_gelu
    monkeypatch.setattr(fused, "linear_layer_norm_gelu", lambda *a: calls.append(1) or real(*a))
    y, gs = run(True)
    monkeypatch.undo()
    assert len(calls) == 2  # both hidden blocks, not the last Linear
    y_ref, gs_ref = run(False)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(gs, gs_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # the forward alone, without saving anything
        native.set_enabled(True)
        torch.testing.assert_close(net(x), y_ref, rtol=1e-5, atol=1e-6)


def test_backward_is_deterministic():
    lin, norm = block(50, 70)
    x = torch.randn(300, 50)

    def grad():
        lin.zero_grad(set_to_none=True)
        norm.zero_grad(set_to_none=True)
        fused.linear_layer_norm_gelu(x, lin, norm).sum().backward()
        return torch.cat([p.grad.flatten() for p in (*lin.parameters(), *norm.parameters())])
    assert torch.equal(grad(), grad())


@pytest.mark.parametrize("case", ["float64", "meta", "tanh", "no_affine", "empty", "disabled"])
def test_what_is_not_fused_runs_eager(case):
    lin, norm, act = nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU()
    x = torch.randn(3, 4)
    if case == "float64":
        lin, norm, x = lin.double(), norm.double(), x.double()
    elif case == "meta":
        lin, norm, x = lin.to("meta"), norm.to("meta"), x.to("meta")
    elif case == "tanh":
        act = nn.GELU(approximate="tanh")
    elif case == "no_affine":
        norm = nn.LayerNorm(6, elementwise_affine=False)
    elif case == "empty":
        x = x[:0]
    else:
        native.set_enabled(False)
    assert not fused.fusable(x, lin, norm, act)
    net = MLP(4, (6,), 2)
    net[1], net[2], net[3] = lin, norm, act
    net[4] = net[4].to(dtype=x.dtype, device=x.device)
    out = net(x)  # the eager modules
    assert out.shape == (x.shape[0], 2) and out.device == x.device and out.dtype == x.dtype


def test_bad_operands_get_a_clear_error():
    assert native.available()
    ops = native.ops()
    h = torch.randn(4, 6)
    v = torch.zeros(6)
    with pytest.raises(RuntimeError, match="contiguous 2-d float32 CPU tensor"):
        ops.layer_norm_gelu(h.t(), torch.zeros(4), torch.zeros(4), torch.zeros(4), 1e-5)
    with pytest.raises(RuntimeError, match="float32 vectors of length 6"):
        ops.layer_norm_gelu(h, torch.zeros(5), v, v, 1e-5)
