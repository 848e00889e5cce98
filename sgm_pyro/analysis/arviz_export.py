"""The pose posterior ``p(η | x)`` of an SGM as an ArviZ ``InferenceData`` (SPEC sections 1 and 6).

The SGM's model program (:meth:`~sgm_pyro.models.SGM.model`) defines, per image,

    p(η | x) ∝ p_ψ(η | x̂) · N(x; T_η(x̂), σ_pix),      x̂ = T_{f_ω(x)}⁻¹(x),

and its guide ``q_ω(η | x)`` is a proposal for it. We draw ``K`` proposals per image and chain,
weight them by ``log w = log p(x, η) − log q_ω(η | x)`` (the weights of the IWLB, SPEC 6), smooth
the weights with Pareto-smoothed importance sampling (PSIS; Vehtari et al., 2024, ``az.psislw``)
and resample the posterior draws from the smoothed, normalised weights (sampling-importance-
resampling). Smoothing only caps the largest weights, so it trades a little bias for much less
variance when a few proposals dominate; ``pareto_k`` says when even that is not enough
(k̂ > 0.7: the guide misses part of the posterior and the draws should not be trusted).

Each chain is an independent importance-sampling run (its own ``K`` proposals, its own smoothing
and resampling), so ``az.summary``'s ``r_hat`` compares independent runs. Resampling is
multinomial (draws are exchangeable, not a Markov chain): ArviZ's ``ess_*`` then count repeated
proposals as distinct draws and overstate the information; ``sample_stats.importance_ess`` (the
Kish ESS ``1 / Σ w̄²`` of the pooled smoothed weights) is the honest figure.
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timezone

import numpy as np
import pyro
import torch
import xarray as xr
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from ..models import SGM
from ..validation import check_images, check_positive_int

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.23 announces its 1.0 refactor on import
    import arviz as az

__all__ = ["to_inference_data"]

_PARTICLES = "arviz_particles"
# Default chunk: about this many warped pixels per vectorised pass keeps peak memory near 100 MB.
_PIXELS_PER_CHUNK = 1 << 22


def to_inference_data(model: SGM, x: Tensor, num_samples: int = 1000, *, num_chains: int = 1,
                      num_proposals: int | None = None, num_prior_samples: int | None = None,
                      seed: int = 0, chunk_size: int | None = None) -> az.InferenceData:
    """Export the pose posterior of each image in ``x`` as an ``arviz.InferenceData``.

    Args:
        model: a fitted :class:`~sgm_pyro.models.SGM` (evaluated in ``eval()`` mode, then restored).
        x: images ``(N, C, H, W)`` in ``[-1, 1]`` with the model's image shape.
        num_samples: posterior draws per chain and image, resampled from the proposals.
        num_chains: independent importance-sampling runs (ArviZ's ``chain`` dimension).
        num_proposals: ``K`` proposals from ``q_ω(η | x)`` per chain and image; default
            ``4 * num_samples``. ``K`` below about 25 leaves PSIS too short a tail: k̂ is then ``inf``.
        num_prior_samples: draws of ``p_ψ(η | x̂)`` per chain for the ``prior`` group; default
            ``num_samples``.
        seed: seeds every draw; the caller's global torch RNG state is left untouched.
        chunk_size: proposals traced at once (vectorised); ``None`` picks a size that keeps about
            4M warped pixels in memory.

    Returns:
        ``InferenceData`` with coordinates ``image = 0..N-1`` and ``eta_dim = model.group.names``:

        * ``posterior.eta``: ``(chain, draw, image, eta_dim)``, importance-resampled ``p(η | x)``;
        * ``prior.eta``: ``(chain, draw, image, eta_dim)``, draws of ``p_ψ(η | x̂)``;
        * ``log_likelihood.x``: ``(chain, draw, image)``, ``log N(x; T_η(x̂), σ_pix)`` of each
          posterior draw (summed over pixels), for ``az.loo`` / ``az.waic``;
        * ``sample_stats``: ``lp`` ``(chain, draw, image)`` = ``log p(x, η)`` of each draw,
          ``particle_index`` ``(chain, draw, image)`` (the proposal each draw copies), raw
          ``log_weight`` ``(chain, particle, image)`` and ``eta_proposal``
          ``(chain, particle, image, eta_dim)``, and per image ``pareto_k`` (k̂ of the pooled
          weights of all chains), ``importance_ess`` and ``log_marginal`` (the IWLB
          ``log (1/(chains·K)) Σ w``, a lower bound on ``log p(x)`` in expectation, SPEC 6);
        * ``observed_data.x``: ``(image, channel, row, col)``;
        * ``constant_data``: ``pose = f_ω(x)`` ``(image, eta_dim)`` and ``prototype`` ``x̂``.

    Raises:
        ValueError: for a non-SGM model, bad images, non-positive counts, non-finite log-weights, or
            an image where every proposal has zero weight (the guide misses the posterior entirely).

    Warns:
        UserWarning: when some image has k̂ > 0.7 (its draws are then unreliable).

    The weights are those of :func:`sgm_pyro.inference.iwlb` on ``(model.model, model.guide)``; we
    trace the pair here because the resampling needs the proposals themselves, not only weights.
    """
    if not isinstance(model, SGM):
        raise ValueError(f"model must be a sgm_pyro.SGM, got {type(model).__name__}")
    x = check_images(x, model.image_shape, "x").to(model.device, model.group.bounds.dtype)
    check_positive_int(num_samples, "num_samples")
    check_positive_int(num_chains, "num_chains")
    k = check_positive_int(num_proposals, "num_proposals") if num_proposals is not None else 4 * num_samples
    s_prior = check_positive_int(num_prior_samples, "num_prior_samples") if num_prior_samples is not None \
        else num_samples
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    n = x.shape[0]
    chunk = chunk_size or max(1, _PIXELS_PER_CHUNK // (n * math.prod(model.image_shape)))

    devices = [model.device] if model.device.type == "cuda" else []
    was_training = model.training
    model.eval()  # dropout in the prior's feature network would make log p_ψ random
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            eta, log_w, log_lik, log_joint = _proposals(model, x, num_chains * k, chunk)
            x_hat = model.prototype(x)
            pose = model.infer_eta(x)
            prior = model.sample_eta(x_hat, num_chains * s_prior).view(num_chains, s_prior, n, -1)
            gen = torch.Generator().manual_seed(seed)
    finally:
        model.train(was_training)

    shape = (num_chains, k, n)
    lw = log_w.double().cpu().numpy().reshape(shape)
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError("the importance log-weights contain NaN or +inf: a log-density of the model or guide is "
                         "not finite at some proposals (check the prior program)")
    dead = ~np.isfinite(lw).any(axis=(0, 1))
    if dead.any():
        raise ValueError(f"every proposal of image(s) {np.flatnonzero(dead).tolist()} has zero weight: the guide "
                         "q(eta | x) misses the model's posterior there (check the prior's support)")
    smoothed, _ = _psis(np.moveaxis(lw, 1, -1))  # (chain, image, K), normalised per chain
    pooled, pareto_k = _psis(lw.transpose(2, 0, 1).reshape(n, num_chains * k))  # (image, chains·K)
    bad = np.flatnonzero(pareto_k > 0.7)
    if bad.size:
        warnings.warn(f"Pareto k-hat > 0.7 for image(s) {bad.tolist()} (max {pareto_k.max():.2f}): the guide "
                      "q(eta | x) is a poor proposal there and their posterior draws are unreliable; see "
                      "sample_stats.pareto_k", UserWarning, stacklevel=2)
    # Multinomial resampling of each (chain, image) row; a seeded CPU generator keeps it reproducible.
    probs = torch.from_numpy(np.exp(smoothed)).reshape(num_chains * n, k)
    idx = torch.multinomial(probs, num_samples, replacement=True, generator=gen)
    idx = idx.view(num_chains, n, num_samples).transpose(1, 2)  # (chain, draw, image)
    pick = idx.to(eta.device)

    def gather(values: Tensor) -> np.ndarray:  # (chains·K, N, ...) -> (chain, draw, N, ...)
        values = values.reshape(num_chains, k, n, *values.shape[2:])
        i = pick.reshape(num_chains, num_samples, n, *([1] * (values.dim() - 3)))
        return values.gather(1, i.expand(-1, -1, -1, *values.shape[3:])).cpu().numpy()

    log_marginal = torch.logsumexp(log_w.double(), 0) - math.log(num_chains * k)
    draws = {"chain": np.arange(num_chains), "draw": np.arange(num_samples), "image": np.arange(n),
             "eta_dim": list(model.group.names)}
    cd, ci, ce = ("chain", "draw", "image"), ("image",), ("chain", "draw", "image", "eta_dim")
    c, h, w = model.image_shape
    pix = {"channel": np.arange(c), "row": np.arange(h), "col": np.arange(w)}
    img = ("image", "channel", "row", "col")
    attrs = {"created_at": datetime.now(timezone.utc).isoformat(), "inference_library": "sgm_pyro",
             "group_names": list(model.group.names), "pixel_scale": model.pixel_scale, "num_proposals": k,
             "resampling": "multinomial from PSIS-smoothed normalised importance weights, proposal q(eta | x)",
             "seed": seed}
    groups = {
        "posterior": xr.Dataset({"eta": (ce, gather(eta))}, coords=draws, attrs=attrs),
        "prior": xr.Dataset({"eta": (ce, prior.cpu().numpy())},
                            coords={**draws, "draw": np.arange(s_prior)}, attrs=attrs),
        "log_likelihood": xr.Dataset({"x": (cd, gather(log_lik))}, coords=draws, attrs=attrs),
        "sample_stats": xr.Dataset({
            "lp": (cd, gather(log_joint)),
            "particle_index": (cd, idx.numpy()),
            "log_weight": (("chain", "particle", "image"), lw),
            "eta_proposal": (("chain", "particle", "image", "eta_dim"),
                             eta.reshape(num_chains, k, n, -1).cpu().numpy()),
            "pareto_k": (ci, pareto_k),
            "importance_ess": (ci, 1.0 / np.exp(2 * pooled).sum(-1)),
            "log_marginal": (ci, log_marginal.cpu().numpy()),
        }, coords={**draws, "particle": np.arange(k)}, attrs=attrs),
        "observed_data": xr.Dataset({"x": (img, x.cpu().numpy())}, coords={"image": draws["image"], **pix},
                                    attrs=attrs),
        "constant_data": xr.Dataset({"pose": (("image", "eta_dim"), pose.cpu().numpy()),
                                     "prototype": (img, x_hat.cpu().numpy())},
                                    coords={"image": draws["image"], "eta_dim": draws["eta_dim"], **pix}, attrs=attrs),
    }
    return az.InferenceData(**groups)


def _psis(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``az.psislw`` over the last axis: normalised smoothed log weights (same shape) and k̂ (``[:-1]``).

    ArviZ warns when k̂ is high; we report k̂ in ``sample_stats`` instead of warning per image.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        smoothed, k_hat = az.psislw(log_weights)
    return np.asarray(smoothed), np.asarray(k_hat)


def _proposals(model: SGM, x: Tensor, num: int, chunk: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Trace guide then model on ``num`` vectorised proposals per image.

    Returns ``eta (num, N, dim)``, ``log_w (num, N)`` = ``log p(x, η) − log q(η | x)``, the ``"x"``
    site's ``log_lik (num, N)`` and ``log_joint (num, N)`` = ``log p(x, η)``.
    """
    parts: list[tuple[Tensor, ...]] = []
    with model.param_scope():
        for start in range(0, num, chunk):
            size = min(chunk, num - start)
            # The particle plate sits left of the data plate (dim -1), as in Pyro's vectorised ELBOs.
            # block() goes outside: inside it would hide the sites from the particle plate too.
            with poutine.block(), pyro.plate(_PARTICLES, size, dim=-2):
                guide = poutine.trace(model.guide).get_trace(x)
                joint = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x)
            parts.append(_weights(guide, joint, size, x.shape[0]))
    eta, log_w, log_lik, log_joint = (torch.cat(p, 0) for p in zip(*parts))
    return eta, log_w, log_lik, log_joint


def _weights(guide, joint, size: int, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    guide, joint = prune_subsample_sites(guide), prune_subsample_sites(joint)
    guide.compute_log_prob()
    joint.compute_log_prob()
    q_sites = {name for name, s in guide.nodes.items() if s["type"] == "sample" and not s["is_observed"]}

    def site_log_prob(site: dict, name: str) -> Tensor:
        try:
            return torch.broadcast_to(site["log_prob"], (size, n))
        except RuntimeError as e:
            raise ValueError(f"site '{name}' has log-density shape {tuple(site['log_prob'].shape)}; expected it to "
                             f"broadcast to (particles, images) = {(size, n)} (extra plates are not supported)") from e

    log_q = sum(site_log_prob(guide.nodes[s], s) for s in q_sites)
    log_lik = site_log_prob(joint.nodes["x"], "x")
    log_joint = torch.zeros_like(log_lik)
    for name, site in joint.nodes.items():
        # Model latents the guide does not propose are drawn from the prior: their p/q cancels.
        if site["type"] == "sample" and (site["is_observed"] or name in q_sites):
            log_joint = log_joint + site_log_prob(site, name)
    return guide.nodes["eta"]["value"].expand(size, n, -1), log_joint - log_q, log_lik, log_joint
