"""The compiled affine warp samples what ``F.grid_sample`` samples, with the same gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

import sgm_pyro
from sgm_pyro import native
from sgm_pyro.groups import native_warp
from sgm_pyro.groups.affine import sampling_grid

pytestmark = pytest.mark.usefixtures("native_kernels")  # built here (tests/conftest.py), state restored


def matrices(n: int, spread: float, seed: int) -> torch.Tensor:
    """Sampling matrices ``A⁻¹`` from the identity to well past the frame (``spread`` ~ 1 reaches outside)."""
    g = torch.Generator().manual_seed(seed)
    inv = torch.eye(3).repeat(n, 1, 1)
    inv[:, :2] += spread * torch.randn(n, 2, 3, generator=g)
    return inv


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (4, 3, 9, 13), (3, 2, 1, 6), (2, 1, 32, 32)])
@pytest.mark.parametrize("spread", [0.05, 0.8])
def test_values_and_gradients_match_grid_sample_in_float64(shape, spread):
    n, c, h, w = shape
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    inv = matrices(n, spread, seed=2)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3))

    def run(images, mats, warp):
        images, mats = images.clone().requires_grad_(), mats.clone().requires_grad_()
        out = warp(images, mats)
        out.backward(g.to(out.dtype))
        return out.detach().double(), images.grad.double(), mats.grad.double()

    assert native.available() and native_warp.usable(x, inv)
    got = run(x, inv, native_warp.warp)
    # the reference in float64, so that the comparison is of the method, not of float32 rounding
    want = run(x.double(), inv.double(), lambda a, m: F.grid_sample(a, sampling_grid(m, h, w), align_corners=True))
    for name, a, b in zip(("output", "image gradient", "matrix gradient"), got, want):
        scale = max(1.0, float(b.abs().max()))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5 * scale, msg=lambda m: f"{name}: {m}")
    assert torch.count_nonzero(got[2][:, 2]) == 0  # the bottom row of a sampling matrix gets no gradient


@pytest.mark.parametrize("generators", [("tx", "ty", "rot", "log_sx", "log_sy"), ("rot",)])
def test_group_act_is_the_same_with_and_without_the_kernel(generators):
    """Through ``AffineGroup.act``: the fill shift, the non-square aspect conjugation, a chain's gradient."""
    group = sgm_pyro.AffineGroup(generators=generators)
    torch.manual_seed(0)
    x = torch.rand(6, 1, 20, 24) * 2 - 1
    eta = (group.sample_uniform(6) * 0.9).requires_grad_()

    def run(enabled):
        native.set_enabled(enabled)
        eta.grad = None
        out = group.act(x, group.compose(group.element(eta), group.invert(group.element(0.5 * eta))))
        out.square().sum().backward()
        return out.detach(), eta.grad.clone()
    out, grad = run(True)
    out_ref, grad_ref = run(False)
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-3, atol=1e-3 * float(grad_ref.abs().max()))


def test_a_quarter_turn_of_a_square_image_is_exact():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    inv = torch.tensor([[[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]])
    assert native.available()
    out = native_warp.warp(x, inv)
    # output pixel (x, y) reads the input at (y, -x): the content turns clockwise as displayed
    torch.testing.assert_close(out, torch.rot90(x, -1, (2, 3)), rtol=0, atol=1e-4)


def test_a_non_finite_matrix_gives_nan_not_zeros():
    """grid_sample returns NaN for a NaN sampling point; the kernel must not turn it into a silent zero."""
    assert native.available()
    inv = torch.eye(3).repeat(2, 1, 1)
    inv[1, 0, 2] = float("nan")
    out = native_warp.warp(torch.randn(2, 1, 5, 5), inv)
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all()


def test_other_dtypes_paddings_and_interpolations_use_grid_sample():
    assert not native_warp.usable(torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.eye(3).repeat(2, 1, 1).double())
    assert not native_warp.usable(torch.randn(2, 1, 4, 4, device="meta"), torch.eye(3).repeat(2, 1, 1))
    assert not native_warp.usable(torch.randn(0, 1, 4, 4), torch.eye(3).repeat(0, 1, 1))
    x, eta = torch.rand(3, 1, 8, 8) * 2 - 1, torch.zeros(3, 5)
    eta[:, 2] = 0.7
    for kwargs in (dict(padding_mode="border"), dict(interpolation="nearest")):
        group = sgm_pyro.AffineGroup(**kwargs)
        native.set_enabled(True)
        on = group.act(x, group.element(eta))
        native.set_enabled(False)
        torch.testing.assert_close(on, group.act(x, group.element(eta)), rtol=0, atol=0)


def test_bad_operands_get_a_clear_error():
    assert native.available()
    ops = native.ops()
    with pytest.raises(RuntimeError, match=r"contiguous \(N, C, H, W\) float32 CPU images"):
        ops.affine_warp(torch.randn(2, 4, 4), torch.zeros(2, 2, 3))
    with pytest.raises(RuntimeError, match=r"contiguous \(2, 2, 3\) float32 matrices"):
        ops.affine_warp(torch.randn(2, 1, 4, 4), torch.zeros(3, 2, 3))
