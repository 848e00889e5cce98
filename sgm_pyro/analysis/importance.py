"""Sampling-importance-resampling of a Pyro model/guide pair with per-datum latents (SPEC section 6).

The machinery behind :mod:`sgm_pyro.analysis.arviz_export`: ``K`` vectorised proposals per datum
from the guide, their log weights ``log p(x, h) − log q(h | x)`` (the weights of the IWLB), Pareto-
smoothed importance sampling (PSIS; Vehtari et al., 2024, ``az.psislw``) and multinomial resampling.
Nothing here knows about images or groups.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.23 announces its 1.0 refactor on import
    import arviz as az

_PARTICLES = "arviz_particles"


@dataclass
class Proposals:
    """``num`` proposals per datum: ``latents[name]: (num, N, *event)`` and ``(num, N)`` log terms.

    ``log_weight = log p(x, h) − log q(h | x)``, ``log_lik`` = the observed site's log-density and
    ``log_joint = log p(x, h)``.
    """

    latents: dict[str, Tensor]
    log_weight: Tensor
    log_lik: Tensor
    log_joint: Tensor


def trace_proposals(model: Callable, guide: Callable, x: Tensor, num: int, chunk: int,
                    observed: str = "x") -> Proposals:
    """Trace ``guide(x)`` then ``model(x)`` replayed on it, ``chunk`` vectorised particles at a time."""
    parts: list[Proposals] = []
    n = x.shape[0]
    for start in range(0, num, chunk):
        size = min(chunk, num - start)
        # The particle plate sits left of the data plate (dim -1), as in Pyro's vectorised ELBOs.
        # block() goes outside: inside it would hide the sites from the particle plate too.
        with poutine.block(), pyro.plate(_PARTICLES, size, dim=-2):
            g = poutine.trace(guide).get_trace(x)
            m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x)
        parts.append(_weights(g, m, size, n, observed))
    return Proposals({k: torch.cat([p.latents[k] for p in parts]) for k in parts[0].latents},
                     *(torch.cat([getattr(p, f) for p in parts]) for f in ("log_weight", "log_lik", "log_joint")))


def trace_prior(model: Callable, x: Tensor, num: int, chunk: int) -> dict[str, Tensor]:
    """Draws of the model's latent sites from the model itself (``x`` stays observed): ``(num, N, *event)``."""
    parts: list[dict[str, Tensor]] = []
    for start in range(0, num, chunk):
        size = min(chunk, num - start)
        with poutine.block(), pyro.plate(_PARTICLES, size, dim=-2):
            m = prune_subsample_sites(poutine.trace(model).get_trace(x))
        parts.append({name: _particles(s["value"], size, x.shape[0], s["fn"].event_shape)
                      for name, s in m.nodes.items() if s["type"] == "sample" and not s["is_observed"]})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _particles(value: Tensor, size: int, n: int, event_shape) -> Tensor:
    return value.expand(size, n, *event_shape)


def _weights(guide, joint, size: int, n: int, observed: str) -> Proposals:
    guide, joint = prune_subsample_sites(guide), prune_subsample_sites(joint)
    guide.compute_log_prob()
    joint.compute_log_prob()
    q_sites = [name for name, s in guide.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
    if observed not in joint.nodes or not joint.nodes[observed]["is_observed"]:
        raise ValueError(f"the model has no observed site {observed!r}")

    def site_log_prob(site: dict, name: str) -> Tensor:
        try:
            return torch.broadcast_to(site["log_prob"], (size, n))
        except RuntimeError as e:
            raise ValueError(f"site '{name}' has log-density shape {tuple(site['log_prob'].shape)}; expected it to "
                             f"broadcast to (particles, data) = {(size, n)} (extra plates are not supported)") from e

    log_q = sum(site_log_prob(guide.nodes[s], s) for s in q_sites)
    log_lik = site_log_prob(joint.nodes[observed], observed)
    log_joint = torch.zeros_like(log_lik)
    for name, site in joint.nodes.items():
        # Model latents the guide does not propose are drawn from the prior: their p/q cancels.
        if site["type"] == "sample" and (site["is_observed"] or name in q_sites):
            log_joint = log_joint + site_log_prob(site, name)
    latents = {s: _particles(guide.nodes[s]["value"], size, n, guide.nodes[s]["fn"].event_shape) for s in q_sites}
    return Proposals(latents, log_joint - log_q, log_lik, log_joint)


def check_log_weights(lw: np.ndarray) -> None:
    """``lw: (chain, K, N)``; ``ValueError`` for NaN/+inf weights or a datum whose weights are all zero."""
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError("the importance log-weights contain NaN or +inf: a log-density of the model or guide is "
                         "not finite at some proposals (check the prior program)")
    dead = ~np.isfinite(lw).any(axis=(0, 1))
    if dead.any():
        raise ValueError(f"every proposal of datum/image(s) {np.flatnonzero(dead).tolist()} has zero weight: the "
                         "guide misses the model's posterior there (check the prior's support)")


def psis(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``az.psislw`` over the last axis: normalised smoothed log weights (same shape) and k̂ (``[:-1]``).

    ArviZ warns when k̂ is high; we report k̂ in ``sample_stats`` instead of warning per datum.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        smoothed, k_hat = az.psislw(log_weights)
    return np.asarray(smoothed), np.asarray(k_hat)


def resample(smoothed: np.ndarray, num_samples: int, generator: torch.Generator) -> np.ndarray:
    """Multinomial indices ``(chain, draw, N)`` from normalised log weights ``(chain, N, K)``."""
    chains, n, k = smoothed.shape
    probs = torch.from_numpy(np.exp(smoothed)).reshape(chains * n, k)
    idx = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
    return idx.view(chains, n, num_samples).transpose(1, 2).numpy()


def gather(values: Tensor, idx: np.ndarray) -> np.ndarray:
    """``values: (chains·K, N, ...)`` picked by ``idx: (chain, draw, N)`` -> ``(chain, draw, N, ...)``."""
    chains, draws, n = idx.shape
    values = values.reshape(chains, -1, n, *values.shape[2:])
    pick = torch.from_numpy(idx).to(values.device).reshape(chains, draws, n, *([1] * (values.dim() - 3)))
    return values.gather(1, pick.expand(-1, -1, -1, *values.shape[3:])).cpu().numpy()


def log_mean_exp(log_w: Tensor) -> np.ndarray:
    """``log (1/K) Σ_k w_k`` over dim 0 in float64: the IWLB of each datum, ``(N,)``."""
    return (torch.logsumexp(log_w.double(), 0) - math.log(log_w.shape[0])).cpu().numpy()
