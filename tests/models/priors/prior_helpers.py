"""Shared helpers for the prior-program tests: small networks, groups per prior, quick fits."""

from __future__ import annotations

import math

import torch

from sgm_pyro.groups import AffineGroup
from sgm_pyro.models.priors import PRIORS, make_prior

IMAGE_SHAPE = (1, 4, 4)
SMALL = dict(hidden=(32, 32), feature_hidden=(32,), dropout=0.0)
ROTATION_PRIORS = ("circular", "discrete-rotation")
LEARNED_PRIORS = tuple(name for name in PRIORS if name != "box")


def build(name: str, group, **kwargs):
    """A prior with small networks (the box prior takes no network settings)."""
    settings = {} if name == "box" else {**SMALL, **kwargs}
    return make_prior(name, group, IMAGE_SHAPE, **settings)


def group_for(name: str, dim: int, squash: bool = False) -> AffineGroup:
    """A group of ``dim`` coordinates (1, 2 or 5) that ``name`` accepts; rotation priors need "rot"."""
    if dim == 5:
        return AffineGroup(squash=squash)
    if name in ROTATION_PRIORS:
        generators = ("rot",) if dim == 1 else ("tx", "rot")
    else:
        generators = ("tx",) if dim == 1 else ("tx", "ty")
    bounds = [0.5 if g != "rot" else math.pi for g in generators]
    offset = [0.1 if g != "rot" else 0.0 for g in generators]
    return AffineGroup(bounds=bounds, offset=offset, generators=generators, squash=squash)


def images(n: int, seed: int = 0, level: float = 0.0, noise: float = 0.1) -> torch.Tensor:
    """Prototype images ``(n, *IMAGE_SHAPE)`` in [-1, 1]: a constant ``level`` plus ``noise``-sized noise."""
    g = torch.Generator().manual_seed(seed)
    return (level + noise * torch.randn(n, *IMAGE_SHAPE, generator=g)).clamp(-1, 1)


def fit(prior, x_hat: torch.Tensor, eta: torch.Tensor, steps: int, lr: float = 3e-3) -> None:
    """Maximum likelihood: Adam on ``-mean log p(eta | x_hat)`` (full batch), cosine-decayed lr.

    The decay (as in the reference stage-2 schedule) lets short fits settle instead of ending
    on an oscillating step.
    """
    prior.train()
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = -prior.distribution(x_hat).log_prob(eta).mean()
        loss.backward()
        opt.step()
        schedule.step()
    prior.eval()


def scramble(prior, seed: int = 0, steps: int = 5) -> None:
    """A few large random gradient steps, so learned priors are no longer at their identity init."""
    if not list(prior.parameters()):
        return
    torch.manual_seed(seed)
    group = prior.group
    x_hat = images(64, seed=seed)
    eta = group.offset + group.bounds * (0.3 * torch.rand(group.dim) + 0.2 * torch.randn(64, group.dim)).tanh()
    fit(prior, x_hat.to(group.bounds.dtype), eta, steps=steps, lr=0.02)
