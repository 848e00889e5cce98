"""Every prior's ``log_prob`` is a normalised density of η on its domain (1-D and 2-D grids)."""

from __future__ import annotations

import math

import pytest
import torch
from prior_helpers import ROTATION_PRIORS, build, group_for, images, scramble

from sgm_pyro.models.priors import PRIORS


def _axis(name: str, group, i: int, points: int) -> torch.Tensor:
    """Integration grid for coordinate i of a prior's domain.

    The circle and the box prior: a uniform grid over ``offset ± bounds`` (the trapezoid rule is
    spectrally accurate for smooth periodic densities). Squashed flows: ``to_box`` of a uniform
    grid in the unconstrained coordinate, so the grid follows mass piled up near the box edges.
    Unsquashed flows: a uniform grid over a range wide enough to hold the tails.
    """
    offset, bound = float(group.offset[i]), float(group.bounds[i])
    if group.names[i] == "rot" or name == "box":
        return torch.linspace(offset - bound, offset + bound, points, dtype=torch.float64)
    if group.squash:
        return offset + bound * torch.tanh(torch.linspace(-9.0, 9.0, points, dtype=torch.float64))
    return torch.linspace(offset - 8 * bound, offset + 8 * bound, points, dtype=torch.float64)


def _scrambled(name: str, dim: int, squash: bool):
    group = group_for(name, dim, squash)
    prior = build(name, group).double()
    before = prior.distribution(images(1).double())
    scramble(prior, seed=1)
    prior.eval()
    return group, prior, before, prior.distribution(images(1).double())


@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("name", tuple(PRIORS))
def test_log_prob_integrates_to_one_in_1d(name, squash):
    group, prior, before, dist = _scrambled(name, 1, squash)
    grid = _axis(name, group, 0, 20001)
    eta = grid[:, None, None]  # (G, N=1, dim=1)
    log_p = dist.log_prob(eta).squeeze(-1)
    assert torch.isfinite(log_p).all()
    mass = torch.trapezoid(log_p.exp(), grid)
    assert abs(mass.item() - 1.0) < 2e-3
    if name != "box":  # the random steps really moved the density away from its initialisation
        assert (log_p - before.log_prob(eta).squeeze(-1)).abs().max() > 0.05


@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("name", tuple(PRIORS))
def test_log_prob_integrates_to_one_in_2d(name, squash):
    group, prior, before, dist = _scrambled(name, 2, squash)
    a, b = _axis(name, group, 0, 241), _axis(name, group, 1, 401)
    eta = torch.stack(torch.meshgrid(a, b, indexing="ij"), dim=-1).reshape(-1, 1, 2)
    with torch.no_grad():
        log_p = torch.cat([dist.log_prob(chunk) for chunk in eta.split(100_000)]).reshape(len(a), len(b))
    assert torch.isfinite(log_p).all()
    mass = torch.trapezoid(torch.trapezoid(log_p.exp(), b, dim=1), a)
    assert abs(mass.item() - 1.0) < 5e-3
    if name != "box":
        with torch.no_grad():
            moved = log_p.flatten()[::97] - before.log_prob(eta[::97]).squeeze(-1)
        assert moved.abs().max() > 0.05


@pytest.mark.parametrize("name", ROTATION_PRIORS)
def test_rotation_priors_are_periodic_with_period_two_pi(name):
    group, prior, _, dist = _scrambled(name, 2, False)
    # Angles just inside the seam, shifted by ±2π and 4π: the same point of the circle each time.
    base = torch.tensor([[0.1, math.pi - 1e-3], [0.1, -math.pi + 1e-3], [0.1, 2.5]], dtype=torch.float64)
    for turns in (1, -1, -2):
        shifted = base.clone()
        shifted[:, 1] += 2 * math.pi * turns
        torch.testing.assert_close(dist.log_prob(shifted[:, None]), dist.log_prob(base[:, None]), atol=1e-6, rtol=0)
    assert (dist.log_prob(base[:, None]).squeeze(-1).diff().abs() > 1e-3).any()  # not a constant density
