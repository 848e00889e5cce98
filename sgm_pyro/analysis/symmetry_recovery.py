"""Distances between learned and true pose distributions, for the symmetry-recovery benchmark.

* :func:`circular_w1`: exact Wasserstein-1 distance on a circle (rotation, hue);
* :func:`count_modes`: modes of a sample of angles (how many of a C4's four modes were found);
* :func:`recovery_scores`: per class and per η coordinate, the W1 between the true poses and
  (a) the learned poses of the data and (b) samples of ``p(η | x̂)``, after the alignment of
  :mod:`~sgm_pyro.analysis.pose_alignment`.

Units: rotation W1 in degrees (on the ``m``-fold circle for a prototype of symmetry ``m``), hue W1
in hue units (period 1), every other coordinate both raw and as a fraction of its box width
``2·bound``. Results are plain Python data, ready for ``json.dump``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..groups import Group
from .image_stats import as_sample, wasserstein_1d
from .pose_alignment import ClassAlignment

CIRCULAR = {"rot": 2 * math.pi, "hue": 1.0}


def circular_w1(a, b, period: float = 2 * math.pi) -> float:
    """Exact W1 between two empirical samples on a circle of circumference ``period`` (same units).

    On the circle ``W1 = min_α ∫ |F_a(t) − F_b(t) − α| dt`` over one period (Rabin, Delon and
    Gousseau, 2011); ``F_a − F_b`` is a step function, so ``α`` is the median of its steps
    weighted by their widths and the integral is a finite sum. Values may be any reals: they are
    wrapped into ``[0, period)`` first, so angles a whole period apart coincide.
    """
    if not period > 0:
        raise ValueError(f"period must be positive, got {period}")
    a = np.sort(np.mod(as_sample(a, "a"), period))
    b = np.sort(np.mod(as_sample(b, "b"), period))
    support = np.sort(np.concatenate([a, b]))
    # Steps on [t_i, t_{i+1}), plus the arc from the last point round to the first, where both
    # CDFs are equal (0 before the first point, 1 after the last): a step of 0.
    widths = np.append(np.diff(support), period - support[-1] + support[0])
    steps = np.append(np.searchsorted(a, support[:-1], side="right") / a.size
                      - np.searchsorted(b, support[:-1], side="right") / b.size, 0.0)
    order = np.argsort(steps)
    cum = np.cumsum(widths[order])
    alpha = steps[order][np.searchsorted(cum, cum[-1] / 2.0)]
    return float(np.sum(widths * np.abs(steps - alpha)))


def circular_w1_deg(a_rad, b_rad, symmetry: int = 1) -> float:
    """Rotation W1 in degrees between angle samples (radians), modulo ``2π / symmetry``."""
    period = 2 * math.pi / symmetry
    return math.degrees(circular_w1(a_rad, b_rad, period))


def count_modes(angles, *, period: float = 2 * math.pi, bandwidth: float | None = None, bins: int = 360,
                min_mass: float = 0.05, merge_ratio: float = 0.5) -> list[dict]:
    """Modes of a sample on a circle: ``[{"location": ..., "mass": ...}, ...]`` sorted by location.

    The sample is histogrammed into ``bins`` arcs and smoothed with a wrapped Gaussian of width
    ``bandwidth`` (default ``period / 90``, 4° for angles). Neighbouring local maxima are merged
    while the density between them stays above ``merge_ratio`` times the lower one (noise on a
    plateau is one mode); a mode is kept if its basin, between the valleys on either side, holds
    at least ``min_mass`` of the sample. ``location`` is in the input's units within ``[0, period)``.
    """
    x = np.mod(as_sample(angles, "angles"), period)
    bandwidth = period / 90.0 if bandwidth is None else bandwidth
    hist = np.bincount(np.minimum((x / period * bins).astype(int), bins - 1), minlength=bins).astype(float)
    offsets = (np.arange(bins) - bins // 2) * (period / bins)
    kernel = np.exp(-0.5 * (offsets / bandwidth) ** 2)
    density = np.real(np.fft.ifft(np.fft.fft(hist) * np.fft.fft(np.roll(kernel, -(bins // 2)))))
    density = np.maximum(density, 0.0)
    peaks = [i for i in range(bins) if density[i] > density[i - 1] and density[i] >= density[(i + 1) % bins]]
    if not peaks:  # a perfectly flat density: one mode everywhere
        return [{"location": 0.0, "mass": 1.0}]

    def valley(p: int, q: int) -> int:
        arc = [(p + j) % bins for j in range((q - p) % bins + 1)] if p != q else list(range(bins))
        return min(arc, key=lambda i: density[i])

    merged = True
    while merged and len(peaks) > 1:
        merged = False
        for j in range(len(peaks)):
            p, q = peaks[j], peaks[(j + 1) % len(peaks)]
            if density[valley(p, q)] >= merge_ratio * min(density[p], density[q]):
                peaks.remove(p if density[p] < density[q] else q)
                merged = True
                break
    total = density.sum()
    modes = []
    for j, p in enumerate(peaks):
        if len(peaks) == 1:
            mass = 1.0
        else:
            lo, hi = valley(peaks[j - 1], p), valley(p, peaks[(j + 1) % len(peaks)])
            arc = [(lo + i) % bins for i in range((hi - lo) % bins)]
            mass = float(density[arc].sum() / total)
        if mass >= min_mass:
            modes.append({"location": (p + 0.5) * period / bins, "mass": mass})
    return sorted(modes, key=lambda m: m["location"])


def coordinate_w1(group: Group, name: str, a: Tensor, b: Tensor, symmetry: int = 1,
                  bound: float | None = None) -> dict:
    """W1 of one η coordinate: ``{"w1": ..., "fraction": ...}`` (rotation: degrees, and fraction of 360°/m).

    ``fraction`` divides by the box width ``2·bound`` of the coordinate (``bound``: the group's
    unless given; rotation: by the period ``360°/symmetry``; hue: by 1).
    """
    i = group.names.index(name)
    if name == "rot":
        w1 = circular_w1_deg(a, b, symmetry)
        return {"w1": w1, "fraction": w1 / (360.0 / symmetry)}
    if name == "hue":
        w1 = circular_w1(a, b, 1.0)
        return {"w1": w1, "fraction": w1}
    w1 = wasserstein_1d(a, b)
    return {"w1": w1, "fraction": w1 / (2.0 * float(group.bounds[i] if bound is None else bound))}


def recovery_scores(group: Group, true_eta: Tensor, learned_eta: Tensor, labels: Tensor,
                    class_names: Sequence[str], symmetry: Sequence[int] | None = None,
                    prior_samples: Tensor | None = None, bounds: Tensor | None = None) -> tuple[dict, dict]:
    """Per class: aligned W1 of every η coordinate, for the data poses and for ``p(η | x̂)``, and modes.

    Args:
        group: the model's group.
        true_eta, learned_eta: ``(N, dim)``: the data's true η and the model's ``infer_eta``.
        labels: ``(N,)`` class indices into ``class_names``.
        symmetry: rotational symmetry order per class (default 1 for all).
        prior_samples: ``(S, N, dim)`` draws of ``p(η | x̂_i)`` for each image, or ``None``.
        bounds: ``(dim,)`` half-widths the fractions are taken of (default: the group's box); a model
            fitted on a wider box than the task's is scored against the task's.

    Returns ``(scores, aligned)``. ``scores``: ``{class: {"n": ..., "alignment": {...}, "pose":
    {coord: {"w1", "fraction"}}, "prior": {...}, "modes": {"true": [...], "pose": [...], "prior":
    [...]}}}``, plain data; mode lists are those of :func:`count_modes` on the rotation (degrees, on
    the ``m``-fold circle), present when the group has a rotation. ``aligned``: ``{class: {"true":
    (n, dim), "pose": (n, dim), "prior": (S·n, dim) or None}}`` float64 tensors, for figures.
    """
    n, dim = true_eta.shape
    if learned_eta.shape != (n, dim) or labels.shape != (n,):
        raise ValueError(f"true_eta {tuple(true_eta.shape)}, learned_eta {tuple(learned_eta.shape)} and labels "
                         f"{tuple(labels.shape)} must be (N, dim), (N, dim) and (N,) for the same N")
    if prior_samples is not None and prior_samples.shape[1:] != (n, dim):
        raise ValueError(f"prior_samples must be (S, {n}, {dim}), got {tuple(prior_samples.shape)}")
    symmetry = tuple(symmetry) if symmetry is not None else (1,) * len(class_names)
    true_eta, learned_eta, labels = true_eta.cpu(), learned_eta.cpu(), labels.cpu()
    group = group.cpu()
    bounds = group.bounds if bounds is None else torch.as_tensor(bounds, dtype=torch.float64).flatten()
    if bounds.shape != (dim,) or not (bounds > 0).all():
        raise ValueError(f"bounds must be {dim} positive half-widths, got {bounds.tolist()}")
    b = [float(v) for v in bounds]
    out, aligned = {}, {}
    for k, cname in enumerate(class_names):
        idx = (labels == k).nonzero().squeeze(1)
        if idx.numel() < 2:
            continue
        m = symmetry[k]
        alignment, truth = ClassAlignment.fit(group, true_eta[idx], learned_eta[idx], m)
        pose = alignment.apply(learned_eta[idx])
        res = {"n": int(idx.numel()), "symmetry": m, "alignment": alignment.summary(),
               "pose": {c: coordinate_w1(group, c, pose[:, i], truth[:, i], m, b[i]) for i, c in enumerate(group.names)}}
        prior = None
        if prior_samples is not None:
            prior = alignment.apply(prior_samples[:, idx].reshape(-1, dim).cpu())
            res["prior"] = {c: coordinate_w1(group, c, prior[:, i], truth[:, i], m, b[i])
                            for i, c in enumerate(group.names)}
        if "rot" in group.names:
            r = group.names.index("rot")

            def modes(a: Tensor) -> list[dict]:
                found = count_modes(a[:, r] * m, period=2 * math.pi)
                return [{"location_deg": math.degrees(f["location"]) / m, "mass": f["mass"]} for f in found]

            res["modes"] = {"true": modes(truth), "pose": modes(pose)}
            if prior is not None:
                res["modes"]["prior"] = modes(prior)
        aligned[cname] = {"true": truth, "pose": pose, "prior": prior}
        out[cname] = res
    return out, aligned
