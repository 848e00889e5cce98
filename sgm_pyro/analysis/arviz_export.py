"""Posteriors of per-image latents as ArviZ ``InferenceData`` (SPEC sections 1 and 6; docs/arviz.md).

Which model is exported decides what the numbers mean:

* an :class:`~sgm_pyro.models.InvVAE` is a density of ``x`` (``x ~ N(T_η(decoder(z)), σ)``, ``η``
  and ``z`` latent): ``log_likelihood.x`` is the pointwise ``log p(x | η, z)`` that ``az.loo`` and
  ``az.waic`` expect, and ``sample_stats.log_marginal`` is an importance-weighted lower bound on
  ``log p(x)`` (in expectation);
* a bare :class:`~sgm_pyro.models.SGM` is not: its model conditions the prior on ``x̂ = T_{f(x)}⁻¹(x)``
  and centres the observation on a warp of ``x`` itself, so the datum predicts itself. Its
  ``N(x; T_η(x̂), σ)`` is exported as ``sample_stats.log_pseudo_likelihood`` and its normaliser as
  ``log_pseudo_marginal``; there is no ``log_likelihood`` group (``az.loo`` refuses, as it should).
  The posterior ``p(η | x) ∝ p_ψ(η | x̂) N(x; T_η(x̂), σ)`` is still the pose posterior.

Draws are importance-resampled proposals of the guide, not a Markov chain: ArviZ's ``r_hat`` and
``ess_*`` do not apply (repeated proposals count as distinct draws). The diagnostics that do apply,
``importance_ess`` and the PSIS ``pareto_k`` per image, sit in ``sample_stats`` and, summarised, in
the attributes of every group; :func:`importance_summary` puts them next to the posterior summary.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone

import numpy as np
import pyro
import torch
import xarray as xr
from torch import Tensor

from ..models import SGM, InvVAE
from ..validation import check_images, check_positive_int
from .importance import check_log_weights, gather, log_mean_exp, psis, resample, trace_prior, trace_proposals

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.23 announces its 1.0 refactor on import
    import arviz as az

__all__ = ["to_inference_data", "importance_inference_data", "importance_summary", "MCMC_DIAGNOSTICS_NOTE"]

# Default chunk: about this many observed values per vectorised pass keeps peak memory near 100 MB.
_VALUES_PER_CHUNK = 1 << 22

MCMC_DIAGNOSTICS_NOTE = (
    "draws are multinomial resamples of importance-weighted guide proposals, not MCMC: r_hat, ess_bulk and "
    "ess_tail (az.summary, az.rhat, az.ess) do not apply and overstate the information in repeated draws; "
    "use sample_stats.importance_ess (Kish ESS of the smoothed weights) and sample_stats.pareto_k "
    "(PSIS k-hat; above 0.7 the draws of that image are unreliable)")


def to_inference_data(model: SGM | InvVAE, x: Tensor, num_samples: int = 1000, *, num_chains: int = 1,
                      num_proposals: int | None = None, num_prior_samples: int | None = None,
                      seed: int = 0, chunk_size: int | None = None) -> az.InferenceData:
    """Export the posterior of each image's latents as an ``arviz.InferenceData``.

    Args:
        model: an :class:`~sgm_pyro.models.InvVAE` (latents ``eta`` and ``z``; a true likelihood of
            ``x``) or an :class:`~sgm_pyro.models.SGM` (latent ``eta``; a pseudo-likelihood, see the
            module docstring). Evaluated in ``eval()`` mode, then restored.
        x: images ``(N, C, H, W)`` in ``[-1, 1]`` with the model's image shape.
        num_samples, num_chains, num_proposals, num_prior_samples, seed, chunk_size: see
            :func:`importance_inference_data`.

    Returns:
        The groups of :func:`importance_inference_data`, with coordinates ``image``, ``eta_dim =
        group.names`` (and ``z_dim``), plus ``constant_data``: ``pose = f_ω(x)`` ``(image, eta_dim)``
        and ``prototype`` ``x̂ = T_{f(x)}⁻¹(x)`` ``(image, channel, row, col)``.
    """
    if isinstance(model, InvVAE):
        sgm, likelihood, scope = model.sgm, "honest", pyro.get_param_store().scope
    elif isinstance(model, SGM):
        sgm, likelihood, scope = model, "pseudo", model.param_scope
    else:
        raise ValueError(f"model must be a sgm_pyro SGM or InvVAE, got {type(model).__name__}")
    x = check_images(x, sgm.image_shape, "x").to(sgm.device, sgm.group.bounds.dtype)
    was_training = model.training
    model.eval()  # dropout in the prior's feature network would make log p_ψ random
    try:
        with torch.no_grad():
            constant = {"pose": (("image", "eta_dim"), sgm.infer_eta(x).cpu().numpy()),
                        "prototype": (("image", "channel", "row", "col"), sgm.prototype(x).cpu().numpy())}
        return importance_inference_data(
            model.model, model.guide, x, num_samples, num_chains=num_chains, num_proposals=num_proposals,
            num_prior_samples=num_prior_samples, seed=seed, chunk_size=chunk_size, likelihood=likelihood,
            dims={"eta": ["eta_dim"], "z": ["z_dim"]}, coords={"eta_dim": list(sgm.group.names)},
            constant_data=constant, attrs={"pixel_scale": sgm.pixel_scale, "model": type(model).__name__},
            param_scope=scope)
    finally:
        model.train(was_training)


def importance_inference_data(model: Callable, guide: Callable, x: Tensor, num_samples: int = 1000, *,
                              num_chains: int = 1, num_proposals: int | None = None,
                              num_prior_samples: int | None = None, seed: int = 0, chunk_size: int | None = None,
                              observed: str = "x", likelihood: str = "honest",
                              dims: Mapping[str, Sequence[str]] | None = None,
                              coords: Mapping[str, Sequence] | None = None,
                              constant_data: Mapping[str, tuple] | None = None, attrs: Mapping | None = None,
                              param_scope: Callable | None = None) -> az.InferenceData:
    """Sampling-importance-resampling of any Pyro pair ``model(x)`` / ``guide(x)`` as ``InferenceData``.

    Every site must sit in a vectorised ``pyro.plate("data", N)`` at dim -1 (per-datum latents);
    ``model`` observes ``x`` at the site ``observed``. Per chain and datum, ``K`` guide proposals are
    weighted by ``log w = log p(x, h) − log q(h | x)``, smoothed by PSIS and resampled (multinomial).
    Each chain is an independent run (its own proposals, smoothing and resampling).

    Args:
        model, guide: the Pyro programs, called as ``model(x)`` and ``guide(x)``.
        x: the data ``(N, ...)``.
        num_samples: posterior draws per chain and datum.
        num_chains: independent importance-sampling runs (ArviZ's ``chain`` dimension).
        num_proposals: ``K`` proposals per chain and datum; default ``4 * num_samples``. ``K`` below
            about 25 leaves PSIS too short a tail: k̂ is then ``inf``.
        num_prior_samples: draws of the model's latents (run without the guide) per chain for the
            ``prior`` group; default ``num_samples``.
        seed: seeds every draw; the caller's global torch RNG state is left untouched.
        chunk_size: proposals traced at once (vectorised); ``None`` keeps about 4M values in memory.
        observed: the model's observed site.
        likelihood: ``"honest"`` when the observed site is a normalised density of ``x`` given the
            latents (it becomes the ``log_likelihood`` group and the weights bound ``log p(x)``);
            ``"pseudo"`` otherwise (exported as ``log_pseudo_*`` in ``sample_stats``, no
            ``log_likelihood`` group).
        dims, coords: ArviZ dims of each latent's event (default ``<name>_dim_<i>``) and coordinates.
        constant_data: extra ``{name: (dims, array)}`` for the ``constant_data`` group.
        attrs: extra attributes for every group.
        param_scope: context manager for Pyro's parameter store while tracing (default: none).

    Returns:
        ``InferenceData`` with coordinates ``image = 0..N-1`` (the datum) and:

        * ``posterior.<site>``: ``(chain, draw, image, *event)``, importance-resampled ``p(h | x)``;
        * ``prior.<site>``: ``(chain, draw, image, *event)``, draws of the model's latents;
        * ``log_likelihood.<observed>`` (honest only): ``(chain, draw, image)``;
        * ``sample_stats``: ``lp`` = ``log p(x, h)`` of each draw, ``particle_index`` (the proposal
          each draw copies), raw ``log_weight`` ``(chain, particle, image)``, ``<site>_proposal``,
          per image ``pareto_k`` (k̂ of the pooled weights of all chains), ``importance_ess`` and
          ``log_marginal`` = ``log (1/(chains·K)) Σ w`` (honest; an IWLB on ``log p(x)``) or
          ``log_pseudo_likelihood`` / ``log_pseudo_marginal`` (pseudo);
        * ``observed_data.<observed>``: ``(image, ...)``; ``constant_data`` as given.

        Every group's attributes hold ``importance_ess_min``, ``pareto_k_max`` and
        ``mcmc_diagnostics`` (:data:`MCMC_DIAGNOSTICS_NOTE`).

    Raises:
        ValueError: for bad counts, non-finite log-weights, or a datum where every proposal has zero
            weight (the guide misses the posterior entirely).

    Warns:
        UserWarning: when some datum has k̂ > 0.7 (its draws are then unreliable).
    """
    if likelihood not in ("honest", "pseudo"):
        raise ValueError(f"likelihood must be 'honest' or 'pseudo', got {likelihood!r}")
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
    chunk = chunk_size or max(1, _VALUES_PER_CHUNK // (n * math.prod(x.shape[1:])))

    devices = [x.device] if x.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices), (param_scope or contextlib.nullcontext)():
        torch.manual_seed(seed)
        props = trace_proposals(model, guide, x, num_chains * k, chunk, observed)
        prior = trace_prior(model, x, num_chains * s_prior, chunk)
    gen = torch.Generator().manual_seed(seed)

    lw = props.log_weight.double().cpu().numpy().reshape(num_chains, k, n)
    check_log_weights(lw)
    smoothed, _ = psis(np.moveaxis(lw, 1, -1))  # (chain, image, K), normalised per chain
    pooled, pareto_k = psis(lw.transpose(2, 0, 1).reshape(n, num_chains * k))  # (image, chains·K)
    bad = np.flatnonzero(pareto_k > 0.7)
    if bad.size:
        warnings.warn(f"Pareto k-hat > 0.7 for image(s) {bad.tolist()} (max {pareto_k.max():.2f}): the guide "
                      "is a poor proposal there and their posterior draws are unreliable; see "
                      "sample_stats.pareto_k", UserWarning, stacklevel=2)
    idx = resample(smoothed, num_samples, gen)  # (chain, draw, image)
    ess = 1.0 / np.exp(2 * pooled).sum(-1)

    dims = {name: list((dims or {}).get(name, [f"{name}_dim_{i}" for i in range(v.dim() - 2)]))
            for name, v in {**props.latents, **prior}.items()}
    base = {"chain": np.arange(num_chains), "draw": np.arange(num_samples), "image": np.arange(n),
            **{key: list(value) for key, value in (coords or {}).items()}}
    cdi = ("chain", "draw", "image")
    info = {"created_at": datetime.now(timezone.utc).isoformat(), "inference_library": "sgm_pyro",
            "num_proposals": k, "seed": seed, "likelihood": likelihood,
            "resampling": "multinomial from PSIS-smoothed normalised importance weights of the guide's proposals",
            "importance_ess_min": float(ess.min()), "pareto_k_max": float(pareto_k.max()),
            "mcmc_diagnostics": MCMC_DIAGNOSTICS_NOTE, **dict(attrs or {})}
    log_marginal = log_mean_exp(props.log_weight)
    stats = {
        "lp": (cdi, gather(props.log_joint, idx)),
        "particle_index": (cdi, idx),
        "log_weight": (("chain", "particle", "image"), lw),
        **{f"{name}_proposal": (("chain", "particle", "image", *dims[name]),
                                v.reshape(num_chains, k, n, *v.shape[2:]).cpu().numpy())
           for name, v in props.latents.items()},
        "pareto_k": (("image",), pareto_k),
        "importance_ess": (("image",), ess),
    }
    if likelihood == "honest":
        stats["log_marginal"] = (("image",), log_marginal)
    else:
        stats["log_pseudo_likelihood"] = (cdi, gather(props.log_lik, idx))
        stats["log_pseudo_marginal"] = (("image",), log_marginal)
    obs_dims = _observed_dims(observed, x)
    groups = {
        "posterior": _dataset({name: ((*cdi, *dims[name]), gather(v, idx)) for name, v in props.latents.items()},
                              base, info),
        "prior": _dataset({name: ((*cdi, *dims[name]), v.reshape(num_chains, s_prior, n, *v.shape[2:]).cpu().numpy())
                           for name, v in prior.items()}, {**base, "draw": np.arange(s_prior)}, info),
        "sample_stats": _dataset(stats, {**base, "particle": np.arange(k)}, info),
        "observed_data": _dataset({observed: (("image", *obs_dims), x.cpu().numpy())}, base, info),
    }
    if likelihood == "honest":
        groups["log_likelihood"] = _dataset({observed: (cdi, gather(props.log_lik, idx))}, base, info)
    if constant_data:
        groups["constant_data"] = _dataset(dict(constant_data), base, info)
    return az.InferenceData(**groups)


def importance_summary(idata: az.InferenceData, **kwargs) -> "pandas.DataFrame":  # noqa: F821
    """``az.summary(idata, kind="stats")`` with each row's image diagnostics alongside.

    Adds ``importance_ess`` and ``pareto_k`` of the image a row belongs to, in place of the MCMC
    columns (``r_hat``, ``ess_*``) that do not apply to importance-resampled draws. ``kwargs`` go
    to ``az.summary`` (``var_names``, ``hdi_prob``, ...).
    """
    if "sample_stats" not in idata.groups() or "importance_ess" not in idata.sample_stats:
        raise ValueError("importance_summary needs an InferenceData from sgm_pyro's to_inference_data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = az.summary(idata, kind="stats", **kwargs)
    # Rows are named like "eta[3, rot]": the first index is the image (every latent is per image).
    image = [int(str(label).split("[", 1)[1].split(",")[0].rstrip("]")) for label in table.index]
    ss = idata.sample_stats
    table["importance_ess"] = ss["importance_ess"].values[image]
    table["pareto_k"] = ss["pareto_k"].values[image]
    return table


def _dataset(variables: dict, coords: dict, attrs: dict) -> xr.Dataset:
    used = {d for dims, _ in variables.values() for d in dims}
    return xr.Dataset(variables, coords={k: v for k, v in coords.items() if k in used}, attrs=attrs)


def _observed_dims(observed: str, x: Tensor) -> list[str]:
    if x.dim() == 4:
        return ["channel", "row", "col"]
    return [f"{observed}_dim_{i}" for i in range(x.dim() - 1)]
