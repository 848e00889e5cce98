"""Density figures: per-prototype η densities, learned vs true dSprites marginals, heart rotation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .circular import circular_std_deg, wrap_degrees
from .figures import check_display_images, finish, new_figure, show_tiles, tile, to_numpy
from .image_stats import STATISTICS

_SHAPE_NAMES = ("square", "ellipse", "heart")
_REAL, _LEARNED = "tab:blue", "tab:orange"


def _kde(values: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """Gaussian kernel density (Silverman's bandwidth) on ``grid``; ``None`` for a point mass."""
    std = values.std()
    if values.size < 2 or std == 0:
        return None
    bandwidth = 1.06 * std * values.size ** -0.2
    z = (grid[:, None] - values[None, :]) / bandwidth
    return np.exp(-0.5 * z ** 2).sum(1) / (values.size * bandwidth * np.sqrt(2 * np.pi))


def _is_rotation(name: str) -> bool:
    return name == "rot" or name.startswith("rot")


def eta_densities(samples: Tensor, names: Sequence[str], labels: Sequence[str] | None = None, *,
                  prototypes: Tensor | None = None, limits: Sequence[tuple[float, float]] | None = None,
                  max_images: int = 4, bins: int = 40, title: str | None = None, path=None) -> Figure:
    """Per-prototype densities of each η coordinate (the paper's figure 9 style).

    One row per image, one column per coordinate (histogram plus kernel density estimate); the
    rotation coordinate is shown in degrees on ``[-180, 180)``.

    Args:
        samples: ``(S, N, dim)`` draws of ``p_ψ(η | x̂)``, e.g. ``model.sample_eta(x_hat, S)``.
        names: the ``dim`` coordinate names (``model.group.names``).
        labels: optional row labels, one per image.
        prototypes: optional ``(N, C, H, W)`` in ``[-1, 1]``, drawn at the start of each row.
        limits: optional ``(low, high)`` x-range per coordinate (degrees for rotation), e.g. the
            group's box, so that every row shares its axes; default: rotation on ``[-180, 180)``,
            the others on the range of their samples.
        max_images: rows shown (the first images).
        bins: histogram bins.
        title, path: figure title; where to save (``.png``/``.pdf``/``.svg``; ``None`` saves nothing).
    """
    if not isinstance(samples, Tensor) or samples.dim() != 3 or samples.shape[0] == 0 or samples.shape[1] == 0:
        got = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
        raise ValueError(f"samples must have shape (S, N, dim) with S, N > 0, got {got}")
    names = tuple(names)
    if len(names) != samples.shape[2]:
        raise ValueError(f"names must have one entry per η coordinate ({samples.shape[2]}), got {len(names)}")
    n = min(max_images, samples.shape[1])
    if n < 1:
        raise ValueError(f"max_images must be positive, got {max_images}")
    if limits is not None and len(limits) != len(names):
        raise ValueError(f"limits must have one (low, high) pair per coordinate ({len(names)}), got {len(limits)}")
    if labels is not None and len(labels) < n:
        raise ValueError(f"labels must have an entry for each of the {n} images shown, got {len(labels)}")
    if prototypes is not None:
        prototypes = check_display_images(prototypes, "prototypes")
        if prototypes.shape[0] != samples.shape[1]:
            raise ValueError(f"prototypes must have one image per sample column ({samples.shape[1]}), "
                             f"got {prototypes.shape[0]}")
    values = samples[:, :n].detach().cpu().double()
    offset = 1 if prototypes is not None else 0
    fig = new_figure(2.2 * (len(names) + offset), 1.6 * n + 0.4)
    axes = fig.subplots(n, len(names) + offset, squeeze=False)
    for i in range(n):
        if prototypes is not None:
            show_tiles(axes[i, 0], tile(prototypes[i:i + 1], 1))
        for j, name in enumerate(names):
            ax = axes[i, j + offset]
            v = values[:, i, j]
            if _is_rotation(name):
                v, lo, hi = wrap_degrees(torch.rad2deg(v)), -180.0, 180.0
            else:
                lo, hi = v.min().item(), v.max().item()
            if limits is not None:
                lo, hi = (float(b) for b in limits[j])
            v = to_numpy(v, f"samples[:, {i}, {j}]")
            if hi - lo < 1e-9:  # a point mass: give the histogram a visible width
                lo, hi = lo - 0.5, hi + 0.5
            ax.hist(v, bins=bins, range=(lo, hi), density=True, color=_LEARNED, alpha=0.6)
            grid = np.linspace(lo, hi, 200)
            density = _kde(v, grid)
            if density is not None:
                ax.plot(grid, density, color="k", lw=1)
            ax.set_yticks([])
            if i == n - 1:
                ax.set_xlabel(f"{name} (deg)" if _is_rotation(name) else name)
        first = axes[i, 0]
        if labels is not None:
            first.set_ylabel(str(labels[i]))
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def _resampled_labels(shapes: np.ndarray, size: int, resampled_shapes) -> np.ndarray:
    if resampled_shapes is not None:
        out = np.asarray(torch.as_tensor(resampled_shapes).cpu()).reshape(-1)
        if out.size != size:
            raise ValueError(f"resampled_shapes must have one label per resampled value ({size}), got {out.size}")
        return out
    if size % shapes.size:
        raise ValueError(f"resampled statistics have {size} values, not a multiple of the {shapes.size} real images; "
                         "pass resampled_shapes")
    # (S, N) resamples flattened row-major: value s·N + i belongs to image i.
    return np.tile(shapes, size // shapes.size)


def marginals_comparison(real_stats: Mapping[str, Tensor], resampled_stats: Mapping[str, Tensor], shapes,
                         shape_names: Sequence[str] = _SHAPE_NAMES, *, resampled_shapes=None, bins: int = 30,
                         title: str | None = None, path=None) -> Figure:
    """Learned (resampled) vs true marginals of ``com_x``, ``com_y`` and ``area``, one row per shape.

    Args:
        real_stats: :func:`~sgm_pyro.analysis.image_statistics` of the real images, ``(N,)`` each.
        resampled_stats: the same for the resamples, ``(S·N,)`` each (flattened ``(S, N)``) unless
            ``resampled_shapes`` labels them.
        shapes: ``(N,)`` integer labels of the real images, indexing ``shape_names``.
        shape_names: a name per label.
        resampled_shapes: optional labels of the resampled values.
        bins, title, path: histogram bins; figure title; where to save.
    """
    missing = [k for k in STATISTICS if k not in real_stats or k not in resampled_stats]
    if missing:
        raise ValueError(f"real_stats and resampled_stats must contain {STATISTICS} (image_statistics output); "
                         f"missing {missing}")
    labels = np.asarray(torch.as_tensor(shapes).cpu()).reshape(-1)
    real = {k: np.asarray(torch.as_tensor(real_stats[k]).double().cpu()).reshape(-1) for k in STATISTICS}
    fake = {k: np.asarray(torch.as_tensor(resampled_stats[k]).double().cpu()).reshape(-1) for k in STATISTICS}
    if any(v.size != labels.size for v in real.values()):
        raise ValueError(f"real_stats must have one value per shape label ({labels.size})")
    if labels.size == 0:
        raise ValueError("shapes is empty")
    fake_labels = _resampled_labels(labels, fake["com_x"].size, resampled_shapes)
    present = sorted(set(labels.tolist()))
    fig = new_figure(3.0 * len(STATISTICS), 2.0 * len(present) + 0.4)
    axes = fig.subplots(len(present), len(STATISTICS), squeeze=False)
    for r, k in enumerate(present):
        for c, stat in enumerate(STATISTICS):
            ax = axes[r, c]
            a = to_numpy(real[stat][labels == k], f"real {stat}")
            b = fake[stat][fake_labels == k]
            b = b[np.isfinite(b)]
            # Shared bins so the two histograms are directly comparable.
            both = np.concatenate([a, b])
            lo, hi = both.min(), both.max()
            if hi - lo < 1e-9:
                lo, hi = lo - 0.5, hi + 0.5
            ax.hist(a, bins=bins, range=(lo, hi), density=True, alpha=0.5, color=_REAL, label="true")
            if b.size:
                ax.hist(b, bins=bins, range=(lo, hi), density=True, alpha=0.5, color=_LEARNED, label="learned")
            ax.set_yticks([])
            if r == len(present) - 1:
                ax.set_xlabel(stat)
            if c == 0:
                ax.set_ylabel(str(shape_names[k]) if 0 <= k < len(shape_names) else f"label {k}")
    axes[0, -1].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def rotation_density(samples_deg, *, bins: int = 72, title: str | None = None, path=None) -> Figure:
    """Histogram of learned rotations in degrees, with the circular std in the title.

    Args:
        samples_deg: rotations in degrees, any shape (pooled), e.g. the ``(S, N)`` output of
            :func:`~sgm_pyro.analysis.rotation_samples_deg` for hearts (goal: a spike at 0).
        bins, title, path: histogram bins on ``[-180, 180)``; title prefix; where to save.
    """
    v = wrap_degrees(torch.as_tensor(to_numpy(samples_deg, "samples_deg")))
    std = circular_std_deg(torch.deg2rad(v)).item()
    fig = new_figure(5.0, 3.0)
    ax = fig.subplots()
    ax.hist(v.numpy(), bins=bins, range=(-180.0, 180.0), density=True, color=_LEARNED)
    ax.set_xlim(-180.0, 180.0)
    ax.set_xticks(np.arange(-180, 181, 90))
    ax.set_xlabel("rotation (degrees)")
    ax.set_ylabel("density")
    ax.set_title(f"{title or 'learned rotation'}: circular std {std:.1f}°")
    return finish(fig, path)
