"""Importance-weighted lower bound (IWLB) of any Pyro model/guide pair, per datapoint.

For each datapoint ``n`` of the data plate and ``K`` particles drawn from the guide,

    IWLB_n = log (1/K) Σ_k p(x_n, h_k) / q(h_k | x_n),      h_k ~ q(· | x_n)

(Burda et al., 2016; SPEC section 6). It is a lower bound on ``log p(x_n)`` that tightens as
``K`` grows. Particles are vectorised inside a chunk with an outer ``pyro.plate`` (as Pyro's
vectorised ELBOs do) and chunks are combined with a running log-sum-exp, so peak memory depends
on ``chunk_size``, not on ``K``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from ..models.trainers import register
from .distributed import all_gather_objects, shard_range
from .hot_path import trusted_inputs
from .particle_rng import ParticleStreams, UnsupportedDraw

__all__ = ["iwlb", "iwlb_distributed"]

_PARTICLE_PLATE = "iwlb_particles"


class _Layout(NamedTuple):
    """Plate layout found by tracing the pair once without the particle plate."""

    max_plate_nesting: int
    data_dim: int  # negative batch dim of the data plate


@register("iwlb")
def iwlb(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_samples: int = 1000,
    chunk_size: int | None = None,
    data_plate: str = "data",
    seed: int | None = None,
    return_log_weights: bool = False,
    grad: bool = False,
    **kwargs: Any,
) -> Tensor | tuple[Tensor, Tensor]:
    """Per-datapoint importance-weighted lower bound ``log (1/K) Σ_k p(x, h_k) / q(h_k | x)``.

    Every sample site of ``model`` and ``guide`` (latent or observed) must sit inside the plate
    named ``data_plate``: the bound is per datapoint, so global latents make it undefined.
    Nested plates inside the data plate (pixels, ...) are summed over.

    Args:
        model, guide: Pyro programs called as ``model(*args, **kwargs)``; the guide must sample
            every latent site of the model and no site the model lacks.
        num_samples: ``K >= 1`` importance samples per datapoint.
        chunk_size: particles evaluated at once (vectorised); ``None`` means all ``K`` at once.
            Peak memory grows with ``chunk_size``, never with ``K``.
        data_plate: name of the (vectorised) plate that indexes datapoints.
        seed: ``None`` draws particles from the global torch RNG (reproducible with
            ``pyro.set_rng_seed`` for a fixed ``chunk_size``). An int makes particle ``k`` a
            function of ``(seed, k)`` only: the result is then identical for every ``chunk_size``
            and the particles of a run with ``K`` are the first ``K`` of any longer run. All
            particles of a chunk are still drawn in one vectorised guide pass, each from its own
            generator (:class:`~sgm_pyro.inference.particle_rng.ParticleStreams`; a guide whose
            random kernels cannot be split by particle is sampled one particle at a time), and
            the global RNG state is left untouched.
        return_log_weights: also return the ``(K, N)`` log importance weights.
        grad: keep the autograd graph (default: evaluate under ``torch.no_grad``); memory then
            grows with ``K``, since every chunk's graph is kept.

    Returns:
        ``bound: (N,)``, or ``(bound, log_weights: (K, N))`` when ``return_log_weights``.

    The pair is first traced once without particles (as Pyro's ELBOs guess
    ``max_plate_nesting``) to find the data plate's dim and check the sites; the particle plate
    then sits just left of the deepest user plate. That first trace runs with Pyro's validation
    as the caller set it; the chunks run without value checks, so a chunk waits on the device only
    where the bound needs a value.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")
    if seed is not None and (not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise ValueError(f"seed must be None or an int in [0, 2**32), got {seed!r}")
    chunk = num_samples if chunk_size is None else min(chunk_size, num_samples)

    # fork_rng keeps the caller's global RNG stream untouched when we reseed per particle.
    with torch.set_grad_enabled(grad), torch.random.fork_rng(enabled=seed is not None):
        layout = _inspect(model, guide, args, kwargs, data_plate)
        running: Tensor | None = None
        kept: list[Tensor] = []
        with trusted_inputs():  # the first trace checked the programs; the chunks skip value checks
            for start in range(0, num_samples, chunk):
                size = min(chunk, num_samples - start)
                log_w = _chunk_log_weights(
                    model, guide, args, kwargs, layout, data_plate, start, size, seed
                )  # (size, N)
                chunk_lse = torch.logsumexp(log_w, dim=0)
                running = chunk_lse if running is None else torch.logaddexp(running, chunk_lse)
                if return_log_weights:
                    kept.append(log_w)
    assert running is not None
    bound = running - math.log(num_samples)
    if return_log_weights:
        return bound, torch.cat(kept, dim=0)
    return bound


def iwlb_distributed(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: Tensor,
    *,
    batch_size: int = 256,
    seed: int | None = None,
    **kwargs: Any,
) -> Tensor:
    """:func:`iwlb` of every datapoint of ``x``, blocks of ``batch_size`` shared out across the ranks.

    ``x`` (the same on every rank) is cut into blocks of ``batch_size`` datapoints along dim 0;
    the block starting at datapoint ``i`` is scored as ``iwlb(model, guide, x[i:i+batch_size],
    seed=seed + i, **kwargs)``, each rank scores a contiguous share of the blocks, and the
    ``(N,)`` bounds are gathered in order on every rank. With an int ``seed`` a block's particles
    depend only on ``(seed, i)``, so the result is identical for every number of ranks, the
    single-process call included (``batch_size=1`` keys particles per datapoint); it still depends
    on ``batch_size``. ``kwargs`` go to :func:`iwlb` (``num_samples``, ``chunk_size``, ...).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    starts = list(range(0, x.shape[0], batch_size))
    mine = [starts[b] for b in shard_range(len(starts))]
    parts = [iwlb(model, guide, x[i: i + batch_size], seed=None if seed is None else seed + i, **kwargs).cpu()
             for i in mine]
    local = torch.cat(parts) if parts else x.new_zeros(0).cpu()
    return torch.cat(all_gather_objects(local)).to(x.device)


def _particle_seed(seed: int, k: int) -> int:
    """A well-mixed 64-bit seed for particle ``k`` (splitmix64 of ``(seed, k)``).

    Mixing matters: torch's CPU generator keeps only the low 32 bits of its seed, so a plain
    ``(seed << 32) + k`` would ignore ``seed`` altogether.
    """
    mask = (1 << 64) - 1
    z = (((seed << 32) | k) + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def _sample_sites(trace: Trace) -> dict[str, dict[str, Any]]:
    # Plates record their subsample indices as sample sites: not random variables, skip them.
    trace = prune_subsample_sites(trace)
    return {n: s for n, s in trace.nodes.items() if s["type"] == "sample"}


def _inspect(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    data_plate: str,
) -> _Layout:
    """Trace the pair once, unvectorised, to find plate nesting and the data plate's dim."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
    for name, site in model_sites.items():
        if not site["is_observed"] and name not in guide_sites:
            raise ValueError(
                f"the guide does not sample the model's latent site '{name}'; an importance "
                "weight needs q for every latent"
            )
    for name, site in guide_sites.items():
        if not site["is_observed"] and name not in model_sites:
            raise ValueError(
                f"the guide samples '{name}' but the model has no such site; the weight "
                "p/q would be missing its model density"
            )
    data_dims: set[int] = set()
    nesting = 0
    for role, sites in (("model", model_sites), ("guide", guide_sites)):
        for name, site in sites.items():
            frames = [f for f in site["cond_indep_stack"] if f.name == data_plate]
            if not frames:
                raise ValueError(
                    f"{role} site '{name}' is outside the plate '{data_plate}'; the per-datapoint "
                    "bound is undefined for global sites (every site must be in the data plate)"
                )
            if frames[0].dim is None:
                raise ValueError(f"plate '{data_plate}' must be vectorised (not a Python loop)")
            data_dims.add(frames[0].dim)
            nesting = max([nesting] + [-f.dim for f in site["cond_indep_stack"] if f.vectorized])
    if not data_dims:
        raise ValueError("the model has no sample sites")
    if len(data_dims) != 1:
        raise ValueError(f"plate '{data_plate}' appears at several dims {sorted(data_dims)}")
    return _Layout(max_plate_nesting=nesting, data_dim=data_dims.pop())


def _chunk_log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    layout: _Layout,
    data_plate: str,
    start: int,
    size: int,
    seed: int | None,
) -> Tensor:
    """Log weights ``log p(x, h) - log q(h | x)`` of particles ``start .. start+size-1``: (size, N)."""
    particle_dim = -(layout.max_plate_nesting + 1)

    def particles(fn: Callable[..., Any]) -> Callable[..., Any]:
        # A fresh plate per program, as Pyro's vectorised ELBOs do.
        return pyro.plate(_PARTICLE_PLATE, size, dim=particle_dim)(fn)

    with poutine.block():
        if seed is None:
            guide_trace = poutine.trace(particles(guide)).get_trace(*args, **kwargs)
        else:
            try:  # one pass, particle k drawing from its own generator seeded by (seed, k)
                with ParticleStreams([_particle_seed(seed, k) for k in range(start, start + size)]):
                    guide_trace = poutine.trace(particles(guide)).get_trace(*args, **kwargs)
            except UnsupportedDraw:
                values = _seeded_guide_values(guide, args, kwargs, particle_dim, start, size, seed)
                # Replaying the guide on the stitched values recomputes q vectorised over the chunk.
                guide_trace = poutine.trace(poutine.replay(particles(guide), trace=values)).get_trace(
                    *args, **kwargs
                )
        model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w: Tensor | float = 0.0
    for sign, trace in ((1.0, model_trace), (-1.0, guide_trace)):
        for name, site in _sample_sites(trace).items():
            if sign < 0 and site["is_observed"]:
                continue  # observed guide sites carry no q density in the weight
            log_w = log_w + sign * _per_datapoint(site, name, particle_dim, layout.data_dim)
    assert isinstance(log_w, Tensor)
    n = _data_size(model_trace, data_plate)
    return log_w.expand(size, n)


def _seeded_guide_values(
    guide: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    particle_dim: int,
    start: int,
    size: int,
    seed: int,
) -> Trace:
    """Sample the guide one particle at a time, particle ``k`` seeded by ``(seed, k)`` (the fallback path).

    Returns a trace holding, for each latent guide site, the particles stacked along the
    particle plate's dim, ready for ``poutine.replay``.
    """
    one = pyro.plate(_PARTICLE_PLATE, 1, dim=particle_dim)
    per_site: dict[str, list[Tensor]] = {}
    templates: dict[str, dict[str, Any]] = {}
    for k in range(start, start + size):
        torch.manual_seed(_particle_seed(seed, k))
        trace = poutine.trace(one(guide)).get_trace(*args, **kwargs)
        for name, site in _sample_sites(trace).items():
            if not site["is_observed"]:
                per_site.setdefault(name, []).append(site["value"])
                templates[name] = site
    stitched = Trace()
    for name, values in per_site.items():
        batch_ndim = values[0].dim() - templates[name]["fn"].event_dim
        stitched.add_node(
            name,
            type="sample",
            is_observed=False,
            infer=templates[name]["infer"],
            value=torch.cat(values, dim=batch_ndim + particle_dim),
        )
    return stitched


def _per_datapoint(site: dict[str, Any], name: str, particle_dim: int, data_dim: int) -> Tensor:
    """Sum a site's (scaled, masked) log-density over all batch dims but particle and data."""
    scale = site["scale"]
    if not (isinstance(scale, (int, float)) and scale == 1.0):
        raise ValueError(
            f"site '{name}' has a log-density scale ({scale}); iwlb needs unscaled densities "
            "(no subsampled data plate, no poutine.scale)"
        )
    log_p: Tensor = site["log_prob"]
    ndim = -particle_dim
    if log_p.dim() > ndim:
        raise ValueError(f"site '{name}' has batch dims left of the particle plate (enumerated?)")
    log_p = log_p.reshape((1,) * (ndim - log_p.dim()) + log_p.shape)
    others = [d for d in range(-ndim, 0) if d not in (particle_dim, data_dim)]
    if others:
        log_p = log_p.sum(dim=others)
    return log_p  # (particles or 1, N or 1): particle dim is left of the data dim


def _data_size(trace: Trace, data_plate: str) -> int:
    for site in _sample_sites(trace).values():
        for frame in site["cond_indep_stack"]:
            if frame.name == data_plate:
                return int(frame.size)
    raise ValueError(f"no plate named '{data_plate}' in the model")  # _inspect rules this out
