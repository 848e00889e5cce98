"""Maximum-likelihood fits recover known densities of η (SPEC sections 4 and 9)."""

from __future__ import annotations

import math

import pytest
import torch
from prior_helpers import build, fit, images

from sgm_pyro.groups import AffineGroup
from sgm_pyro.models.priors import wrap_angle

QUARTER_TURNS = torch.arange(4) * (math.pi / 2)


@pytest.mark.parametrize("name", ["flow", "circular"])
def test_fit_recovers_a_narrow_and_a_wide_spread_per_prototype(name):
    # Two kinds of prototype (bright and dark images) with a narrow and a wide 1-D spread of η:
    # the conditional density must learn how much symmetry each prototype has.
    if name == "flow":
        group = AffineGroup(bounds=[0.5], offset=[0.1], generators=("tx",), squash=True)
        centre, spreads = 0.1, (0.02, 0.15)
    else:
        group, centre, spreads = AffineGroup(generators=("rot",)), 1.0, (0.05, 0.6)
    n = 128
    x_hat = torch.cat([images(n, 1, level=0.5), images(n, 2, level=-0.5)])
    eta = centre + torch.cat([spreads[0] * torch.randn(n, 1), spreads[1] * torch.randn(n, 1)])
    eta = wrap_angle(eta) if name == "circular" else eta.clamp(-0.39, 0.59)
    prior = build(name, group)
    fit(prior, x_hat, eta, steps=250, lr=1e-2)
    fitted = []
    with torch.no_grad():
        for level, spread in zip((0.5, -0.5), spreads):
            samples = prior.distribution(images(1000, 3, level=level)).sample().flatten()
            error = wrap_angle(samples - centre) if name == "circular" else samples - centre
            # Robust location and scale (median, IQR / 1.349): a short fit leaves thin tails
            # (around the whole circle for the circular flow) that would dominate a standard deviation.
            q1, median, q3 = torch.quantile(error, torch.tensor([0.25, 0.5, 0.75]))
            fitted.append(((q3 - q1) / 1.349).item())
            assert abs(median.item()) < 0.7 * spread
            assert 0.6 * spread < fitted[-1] < 1.6 * spread
    assert fitted[0] < fitted[1] / 3


def _quarter_turn_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One prototype; rotations exactly k·90°; the other coordinates jittered by N(0, 0.05²)."""
    g = torch.Generator().manual_seed(seed)
    eta = 0.05 * torch.randn(n, 5, generator=g)
    eta[:, 2] = wrap_angle(QUARTER_TURNS[torch.randint(0, 4, (n,), generator=g)])
    return images(n, seed, noise=0.0), eta


def test_discrete_rotation_prior_finds_quarter_turns_and_beats_the_flow():
    group = AffineGroup()  # MNIST-style box: rot ± π, the rest ± 0.25, unsquashed
    x_train, eta_train = _quarter_turn_data(256, seed=1)
    x_test, eta_test = _quarter_turn_data(512, seed=2)
    discrete, flow = build("discrete-rotation", group, n=4), build("flow", group)
    for prior in (discrete, flow):  # same budget for both
        fit(prior, x_train, eta_train, steps=150, lr=1e-2)

    with torch.no_grad():
        dist = discrete.distribution(x_test)
        angles = dist.sample((8,))[..., 2]
        off_by = wrap_angle(angles[..., None] - QUARTER_TURNS).abs().min(-1).values
        assert (off_by < math.radians(5)).float().mean() >= 0.9
        weights = discrete.logits(discrete.features(x_test)).softmax(-1).mean(0)
        assert ((weights > 0.15) & (weights < 0.35)).all()
        held_out_discrete = dist.log_prob(eta_test).mean()
        held_out_flow = flow.distribution(x_test).log_prob(eta_test).mean()
    assert held_out_discrete > held_out_flow + 1.0
