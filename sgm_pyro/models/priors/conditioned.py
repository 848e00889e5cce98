"""A prior program conditioned on observed poses, and the density of η it implies (SPEC section 4).

These belong to the program, not to a loop: stage 2 fits :func:`prior_program` by maximum
likelihood, and :meth:`SGM.log_prob_eta` scores a user's program with :func:`eta_log_prob`.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
from pyro import poutine
from pyro.nn import PyroModule
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn


def prior_program(prior: Callable, x_hat: Tensor, eta: Tensor) -> None:
    """The prior program conditioned on observed poses: ``eta ~ p(η | x̂)`` inside the data plate."""
    if isinstance(prior, nn.Module) and not isinstance(prior, PyroModule):
        pyro.module("prior", prior)  # plain nn.Modules register their parameters explicitly
    with pyro.plate("data", x_hat.shape[0]):
        poutine.condition(prior, data={"eta": eta})(x_hat)


def eta_log_prob(prior: Callable, x_hat: Tensor, eta: Tensor) -> Tensor:
    """``log p(η | x̂)`` per example, ``(N,)``, by tracing the conditioned prior program."""
    trace = poutine.trace(prior_program).get_trace(prior, x_hat, eta)
    latent = [n for n, s in trace.nodes.items()
              if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
    if latent:
        raise ValueError(f"the prior program has latent sample sites {latent} besides 'eta'; stage 2 fits by "
                         "maximum likelihood, so a prior must give the density of 'eta' directly "
                         "(marginalise discrete choices inside its distribution)")
    if "eta" not in trace.nodes:
        raise ValueError("the prior program never samples the site 'eta'")
    site = trace.nodes["eta"]
    lp = site["fn"].log_prob(site["value"])
    if lp.shape != (x_hat.shape[0],):
        raise ValueError(f"the prior's 'eta' site must have batch shape ({x_hat.shape[0]},) and event shape "
                         f"(dim,); its log_prob has shape {tuple(lp.shape)}")
    return lp
