"""The prior-program contract, checked for every registered prior (docs/architecture.md)."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from prior_helpers import IMAGE_SHAPE, LEARNED_PRIORS, ROTATION_PRIORS, build, group_for, images, scramble
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from sgm_pyro.groups import AffineGroup
from sgm_pyro.models.priors import (PRIORS, BoxLatentTransform, CircularFlowPrior, DiscreteRotationPrior,
                                    FlowPrior, make_prior)

ALL = tuple(PRIORS)


def test_registry_names_and_unknown_name():
    assert set(PRIORS) == {"flow", "box", "circular", "discrete-rotation"}
    assert isinstance(make_prior("flow", AffineGroup(), IMAGE_SHAPE, **{"hidden": (8,), "feature_hidden": (8,)}),
                      FlowPrior)
    with pytest.raises(ValueError, match="unknown prior"):
        make_prior("gaussian", AffineGroup(), IMAGE_SHAPE)
    with pytest.raises(ValueError, match="image_shape"):
        make_prior("flow", AffineGroup(), None)


@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("name", ALL)
def test_sample_and_log_prob_shapes(name, squash):
    prior = build(name, group_for(name, 5, squash)).eval()
    dist = prior.distribution(images(6))
    assert dist.batch_shape == (6,) and dist.event_shape == (5,)
    eta = dist.sample((3,))
    assert eta.shape == (3, 6, 5)
    log_p = dist.log_prob(eta)
    assert log_p.shape == (3, 6) and torch.isfinite(log_p).all()
    assert dist.sample().shape == (6, 5)
    if dist.has_rsample:
        assert dist.rsample((2,)).shape == (2, 6, 5)


@pytest.mark.parametrize("name", ALL)
def test_forward_samples_site_eta_inside_a_plate(name):
    prior = build(name, group_for(name, 5)).eval()
    x_hat = images(7)
    with pyro.plate("data", 7):
        trace = pyro.poutine.trace(prior).get_trace(x_hat)
    site = trace.nodes["eta"]
    assert site["type"] == "sample" and not site["is_observed"]
    assert site["fn"].batch_shape == (7,) and site["fn"].event_shape == (5,)
    assert site["value"].shape == (7, 5)
    # The score Pyro uses (cached from sampling for flows) is the distribution's log-density.
    trace.compute_log_prob()
    expected = prior.distribution(x_hat).log_prob(site["value"])
    torch.testing.assert_close(site["log_prob"], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_conditioned_program_scores_the_observed_eta(name):
    prior = build(name, group_for(name, 5)).eval()
    x_hat, eta = images(5), AffineGroup().sample_uniform(5, scale=0.5)
    with pyro.plate("data", 5):
        trace = pyro.poutine.trace(pyro.condition(prior, data={"eta": eta})).get_trace(x_hat)
    trace.compute_log_prob()
    assert trace.nodes["eta"]["is_observed"]
    torch.testing.assert_close(trace.nodes["eta"]["log_prob"], prior.distribution(x_hat).log_prob(eta))


@pytest.mark.parametrize("name", ALL)
def test_squashed_samples_stay_in_the_box_with_finite_log_prob(name):
    group = group_for(name, 5, squash=True)
    prior = build(name, group)
    scramble(prior)
    dist = prior.distribution(images(50))
    eta = dist.sample((40,))
    assert group.in_box(eta.reshape(-1, 5), tol=1e-6).all()
    assert torch.isfinite(dist.log_prob(eta)).all()
    # Points exactly on the boundary keep a finite density (tanh is clamped, the box is closed).
    corners = (group.offset + group.bounds * torch.tensor([1.0, -1.0, 0.999, 1.0, -1.0])).expand(50, 5)
    assert torch.isfinite(dist.log_prob(corners)).all()


@pytest.mark.parametrize("name", LEARNED_PRIORS)
def test_gradients_reach_every_parameter(name):
    prior = build(name, group_for(name, 5))
    scramble(prior)  # moves the zero-initialised output layers off zero, so every layer gets signal
    prior.zero_grad()
    eta = AffineGroup().sample_uniform(32, scale=0.5)
    loss = -prior.distribution(images(32)).log_prob(eta).mean()
    loss.backward()
    for pname, p in prior.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", LEARNED_PRIORS)
def test_stage2_svi_with_an_empty_guide_is_maximum_likelihood(name):
    pyro.clear_param_store()
    prior = build(name, group_for(name, 5))
    x_hat, eta = images(64), AffineGroup().sample_uniform(64, scale=0.3)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            prior(x)

    conditioned = pyro.condition(model, data={"eta": eta})
    svi = SVI(conditioned, lambda x: None, Adam({"lr": 1e-2}), Trace_ELBO())
    before = -prior.distribution(x_hat).log_prob(eta).sum().item()
    losses = [svi.step(x_hat) for _ in range(30)]
    assert math.isclose(losses[0], before, rel_tol=1e-4, abs_tol=1e-3)
    assert losses[-1] < losses[0] - 10.0


@pytest.mark.parametrize("name", ALL)
def test_dtype_moves_keep_parameters_and_distributions_together(name):
    prior = build(name, group_for(name, 5)).eval()
    for dtype in (torch.float64, torch.float32):
        prior.to(dtype)
        for t in list(prior.parameters()) + [b for b in prior.buffers() if b.is_floating_point()]:
            assert t.dtype == dtype
        dist = prior.distribution(images(4))  # float32 images are cast to the prior's dtype
        eta = dist.sample((2,))
        assert eta.dtype == dtype and dist.log_prob(eta).dtype == dtype
        with pyro.plate("data", 4):
            assert prior(images(4)).dtype == dtype


@pytest.mark.parametrize("name", ALL)
def test_public_boundary_errors_name_what_was_expected(name):
    prior = build(name, group_for(name, 5))
    with pytest.raises(ValueError, match=r"\(1, 4, 4\)"):
        prior.distribution(torch.zeros(3, 1, 5, 5))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        prior.distribution(torch.zeros(3, 16))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        prior.log_prob(torch.zeros(3, 4), images(3))
    with pytest.raises(ValueError, match="5 coordinates"):
        prior.distribution(images(3)).log_prob(torch.zeros(3, 4))


@pytest.mark.parametrize("cls", [CircularFlowPrior, DiscreteRotationPrior])
def test_rotation_priors_require_the_full_circle(cls):
    with pytest.raises(ValueError, match="'rot' coordinate"):
        cls(AffineGroup(generators=("tx", "ty")), IMAGE_SHAPE)
    with pytest.raises(ValueError, match="0 ± π"):
        cls(AffineGroup(bounds=[0.25, 0.25, 1.0, 0.25, 0.25]), IMAGE_SHAPE)
    with pytest.raises(ValueError, match="0 ± π"):
        cls(AffineGroup(offset=[0.0, 0.0, 0.5, 0.0, 0.0]), IMAGE_SHAPE)


@pytest.mark.parametrize("name", ROTATION_PRIORS)
def test_rotation_density_has_no_seam_and_wraps(name):
    prior = build(name, group_for(name, 1)).double()
    scramble(prior)
    dist = prior.distribution(images(1).double())

    def largest_step(points: int) -> torch.Tensor:
        # Neighbouring grid points all the way round, the step from just below π to -π included.
        theta = torch.linspace(-math.pi, math.pi, points + 1, dtype=torch.float64)[:-1, None, None]
        lp = dist.log_prob(theta).squeeze(-1)
        return (lp.roll(-1) - lp).abs().max()

    # A continuous density's steps shrink with the grid spacing; a seam anywhere (at ±π, or where a
    # circular spline's end knots meet) keeps its jump. 2001 vs 20001 points: 10x finer.
    coarse, fine = largest_step(2000), largest_step(20000)
    assert coarse > 1e-3  # the scrambled density really varies
    assert fine < 0.3 * coarse
    # Just inside ±π and shifted by a turn (exact multiples of 2π wrap to the same float: no test).
    inside = torch.tensor([[[-math.pi + 1e-4]], [[math.pi - 1e-4]]], dtype=torch.float64)
    turned = inside + torch.tensor([2 * math.pi, -2 * math.pi], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(dist.log_prob(turned), dist.log_prob(inside), atol=1e-6, rtol=0)


@pytest.mark.parametrize("squash", [False, True])
def test_box_map_is_the_groups_to_box_with_its_jacobian(squash):
    group = AffineGroup(offset=[0.1, -0.2, 0.0, 0.05, 0.0], squash=squash).double()
    t = BoxLatentTransform(group.offset, group.bounds, group.squash)
    u = torch.randn(10, 5, dtype=torch.float64)
    eta = t.inv(u)
    torch.testing.assert_close(eta, group.to_box(u))
    torch.testing.assert_close(t(eta), group.from_box(eta))
    jac = torch.autograd.functional.jacobian(lambda e: t(e).sum(0), eta).permute(1, 0, 2)
    torch.testing.assert_close(t.log_abs_det_jacobian(eta, t(eta)), torch.logdet(jac))
