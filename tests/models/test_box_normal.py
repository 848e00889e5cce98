"""q_ω(η | x)'s log-density where a squashed pose network saturates tanh (SPEC 3; models/box_normal.py)."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine

from sgm_pyro.groups import AffineGroup
from sgm_pyro.models import PrototypeInference
from sgm_pyro.models.box_normal import BoxNormal

BOUNDS, OFFSET = (0.75, 0.5), (0.0, 0.1)


def saturating_net(mean: float, sigma: float) -> PrototypeInference:
    """A pose network on a squashed (tx, ty) box whose pre-tanh mean is ``(mean, -mean)`` for every x."""
    g = AffineGroup(bounds=BOUNDS, offset=OFFSET, generators=("tx", "ty"), squash=True)
    net = PrototypeInference(g, (1, 4, 4), hidden=(4,), sigma_init=sigma)
    with torch.no_grad():
        net.head[-1].bias.copy_(torch.tensor([mean, -mean]))  # the last layer is zero-initialised
    return net


def reference_log_q(u: torch.Tensor, mean: float, sigma: float) -> torch.Tensor:
    """log q(η(u)) in float64 by the textbook change of variables (accurate for |u| up to about 18)."""
    mu = torch.tensor([mean, -mean], dtype=torch.float64)
    b = torch.tensor(BOUNDS, dtype=torch.float64)
    log_normal = -0.5 * ((u - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    return (log_normal - torch.log(b) - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)


@pytest.mark.parametrize("sigma", [0.01, 0.3])
@pytest.mark.parametrize("mean", [0.0, 3.0, 7.5, 8.5, 9.0, 12.0, 15.0])
def test_guide_log_density_of_its_draws_matches_float64(mean, sigma):
    net = saturating_net(mean, sigma)
    x = torch.zeros(6, 1, 4, 4)
    torch.manual_seed(1)
    with pyro.plate("particles", 50, dim=-2), pyro.plate("data", 6):
        trace = poutine.trace(net).get_trace(x)
    trace.compute_log_prob()
    log_q = trace.nodes["eta"]["log_prob"]  # (50, 6), as the IWLB and the ArviZ export score it
    torch.manual_seed(1)  # the same standard normals; u is then formed in float64
    u = torch.tensor([mean, -mean], dtype=torch.float64) + sigma * torch.randn(50, 6, 2).double()
    assert torch.isfinite(log_q).all()
    torch.testing.assert_close(log_q.double(), reference_log_q(u, mean, sigma), atol=2e-2, rtol=1e-6)


@pytest.mark.parametrize("mean", [6.0, 8.0, 9.0, 15.0])
def test_values_it_did_not_draw_are_scored_finite_and_never_too_low(mean):
    # A copy of a draw (as after stitching particles together) has lost u: the float32 η cannot tell
    # u = 9 from u = 12. Its score must stay finite and must not undercut log q of the true u (which
    # would inflate importance weights); a nearest-to-the-mean pre-image over-states q by ~ε²/2.
    sigma = 0.01
    q = saturating_net(mean, sigma).distribution(torch.zeros(2000, 1, 4, 4))
    eta = q.sample()
    exact, copy = q.log_prob(eta), q.log_prob(eta.clone())
    assert torch.isfinite(copy).all()
    assert (copy >= exact - 1e-3).all()
    assert (copy - exact).mean() < 1.5  # E[ε²/2] = 0.5 per coordinate


def test_density_of_any_eta_integrates_to_one():
    # Unsaturated values resolve u, so log_prob is the exact density of η: it must be normalised.
    b, off = 0.75, 0.1
    q = BoxNormal(torch.tensor([[1.5]]), torch.tensor([[0.8]]), torch.tensor([off]), torch.tensor([b]), True)
    u = torch.linspace(-12, 12, 40001, dtype=torch.float64)
    eta = off + b * torch.tanh(u)
    mass = torch.trapezoid(q.log_prob(eta.float()[:, None, None]).double().exp()[:, 0], eta)
    assert mass.item() == pytest.approx(1.0, abs=1e-3)


def test_unsquashed_box_is_a_scaled_normal():
    loc, scale = torch.tensor([[0.2, -1.0]]), torch.tensor([[0.3, 0.05]])
    off, b = torch.tensor([0.1, 0.0]), torch.tensor([0.25, math.pi])
    q = BoxNormal(loc, scale, off, b, False)
    eta = torch.randn(7, 1, 2)
    expected = torch.distributions.Normal(off + b * loc, b * scale).log_prob(eta).sum(-1)
    torch.testing.assert_close(q.log_prob(eta), expected)
    draw = q.rsample((3,))
    torch.testing.assert_close(q.log_prob(draw), q.log_prob(draw.clone()))


@pytest.mark.parametrize("loc,scale", [(0.95, 0.2), (-0.99, 0.3), (0.0, 0.05), (2.7, 0.4)])
def test_a_full_circle_rotation_gets_the_wrapped_normal(loc, scale):
    bounds = torch.tensor([math.pi])
    q = BoxNormal(torch.tensor([[loc]]), torch.tensor([[scale]]), torch.zeros(1), bounds, False, circular=0)
    eta = q.rsample((4000,))
    assert eta.abs().max() <= math.pi  # every draw is a rotation written inside the box
    # the cached pre-image and a fresh score of the same value agree
    torch.testing.assert_close(q.log_prob(eta), q.log_prob(eta.clone()), atol=1e-4, rtol=0)
    # a density on the circle: it integrates to one over the box
    grid = torch.linspace(-math.pi, math.pi, 20001)[:-1, None, None]
    mass = q.log_prob(grid).exp().sum() * (2 * math.pi / 20000)
    torch.testing.assert_close(mass, torch.tensor(1.0), atol=1e-4, rtol=0)
    # it is the sum of the normal's images a turn apart
    x = torch.tensor([[[0.3]]])
    plain = torch.distributions.Normal(loc * math.pi, scale * math.pi)
    want = torch.logsumexp(torch.stack([plain.log_prob(x + 2 * math.pi * k) for k in range(-3, 4)]), 0)
    torch.testing.assert_close(q.log_prob(x), want.reshape(1, 1), atol=1e-5, rtol=0)


def test_wrapping_is_refused_for_a_squashed_coordinate():
    with pytest.raises(ValueError, match="unsquashed"):
        BoxNormal(torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1), torch.tensor([math.pi]), True, circular=0)


def test_two_circular_coordinates_are_wrapped_and_scored_independently():
    # an unsquashed rotation (half-width π) and hue (offset 0.5, half-width 0.5), both whole circles
    loc, scale = torch.tensor([[0.9, -0.95]]), torch.tensor([[0.3, 0.2]])
    off, b = torch.tensor([0.0, 0.5]), torch.tensor([math.pi, 0.5])
    q = BoxNormal(loc, scale, off, b, False, circular=(0, 1))
    eta = q.rsample((2000,))
    assert (eta[..., 0].abs() <= math.pi).all() and ((eta[..., 1] >= 0) & (eta[..., 1] < 1)).all()
    torch.testing.assert_close(q.log_prob(eta), q.log_prob(eta.clone()), atol=1e-4, rtol=0)
    one = [BoxNormal(loc[:, i:i + 1], scale[:, i:i + 1], off[i:i + 1], b[i:i + 1], False, circular=0) for i in (0, 1)]
    point = torch.tensor([[[2.5, 0.05]]])
    torch.testing.assert_close(q.log_prob(point), one[0].log_prob(point[..., :1]) + one[1].log_prob(point[..., 1:]))
