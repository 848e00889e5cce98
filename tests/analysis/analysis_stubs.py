"""Stand-ins for a trained SGM: just the attributes the analysis functions use."""

from __future__ import annotations

import math

import torch

from sgm_pyro.groups import AffineGroup

DSPRITES_BOUNDS = (0.75, 0.75, math.pi, 0.75, 0.75)


class StubModel:
    """``prototype`` / ``sample_eta`` / ``resample`` given as plain functions.

    Defaults: identity prototypes, η = 0 (no transformation), resamples equal to the originals.
    """

    def __init__(self, prototype=None, sample_eta=None, resample=None, group=None):
        self.group = group if group is not None else AffineGroup(DSPRITES_BOUNDS, squash=True)
        self._prototype = prototype or (lambda x: x.clone())
        self._sample_eta = sample_eta or (lambda x_hat, s: torch.zeros(s, x_hat.shape[0], self.group.dim))
        self._resample = resample or (lambda x, s: x.expand(s, *x.shape).clone())

    def prototype(self, x):
        return self._prototype(x)

    def sample_eta(self, x_hat, num_samples=1):
        return self._sample_eta(x_hat, num_samples)

    def resample(self, x, num_samples=1):
        return self._resample(x, num_samples)
