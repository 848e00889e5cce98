"""Quantitative symmetry-recovery metrics on dSprites (SPEC sections 7 and 8).

Because dSprites' true latent laws are known, three claims of the paper can be measured:

* the prototypes are invariant and one per shape (:func:`invariance_metrics`, which works for
  any labelled images: its keys say *class*, a dSprites shape or an MNIST digit);
* resampled images have the true per-shape marginals of position and size (:func:`recovery_metrics`);
* hearts, never rotated in the data, get a point-mass rotation density, and their resamples stay
  in the two vertical bands of the data (:func:`heart_metrics`).

The functions only need a model exposing ``group`` (with ``names``, ``apply``, ``sample_uniform``),
``prototype(x)``, ``sample_eta(x_hat, S)`` and ``resample(x, S)``, as :class:`~sgm_pyro.models.SGM`
does. Every result is plain Python data (floats, bools, dicts), ready for ``json.dump``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..validation import check_images, check_positive_int
from .circular import circular_std_deg, wrap_degrees
from .image_stats import STATISTICS, as_sample, image_statistics, wasserstein_1d

SHAPE_NAMES: tuple[str, ...] = ("square", "ellipse", "heart")
# The recovery goal of the project: every marginal within 5% of its range.
RECOVERY_TOLERANCE = 0.05


def _labels(shapes, n: int, name: str = "shapes") -> Tensor:
    """Integer labels ``(n,)`` on the CPU, validated against the number of images."""
    labels = torch.as_tensor(shapes).detach().cpu()
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one label per image), got {tuple(labels.shape)}")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError(f"{name} must hold integer labels, got non-integer values")
    return labels.long()


def _name(label: int, shape_names: Sequence[str]) -> str:
    return str(shape_names[label]) if 0 <= label < len(shape_names) else str(label)


def _batched(fn, x: Tensor, batch_size: int) -> Tensor:
    """``fn`` applied to ``x`` in chunks of ``batch_size`` rows (bounded memory for large N)."""
    return torch.cat([fn(chunk) for chunk in x.split(batch_size)])


@torch.no_grad()
def invariance_metrics(model, x: Tensor, labels, *, scale: float | Mapping[str, float] = 0.5, generator: torch.Generator | None = None,
                       batch_size: int = 512, class_names: Sequence[str] = SHAPE_NAMES,
                       shape_names: Sequence[str] | None = None) -> dict:
    """How invariant the prototypes are, and how tightly they cluster by class.

    A class is whatever ``labels`` name: the shape for dSprites, the digit for MNIST.

    Args:
        model: exposes ``group`` and ``prototype(x) -> (N, C, H, W)``.
        x: ``(N, C, H, W)`` in ``[-1, 1]``, ``N >= 2`` and not all identical.
        labels: ``(N,)`` integer class labels (dSprites: 0 square, 1 ellipse, 2 heart).
        scale: transformations ``g`` are uniform on ``offset ± scale · bounds`` of the model's box
            (a number, or ``{coordinate: number}`` with the others 1; a model fitted on a widened box
            is compared with others by the same absolute range).
        generator: random generator for ``g`` (on the group's device), for reproducibility.
        batch_size: images per call to ``model.prototype``.
        class_names: names used as keys of ``per_class_spread`` (labels beyond them keep their
            number; ``()`` keys every class by its label, e.g. ``"7"`` for a digit).
        shape_names: the former name of ``class_names``, still accepted.

    Returns:
        ``invariance_mse``: mean over images of the per-pixel mean of ``(x̂(x) - x̂(T_g x))²``;
        ``data_variance``: per-pixel variance of ``x`` across the batch, averaged over pixels;
        ``invariance_error``: their ratio (0 for perfectly invariant prototypes; about 2 when the
        two prototypes are as different as two unrelated images);
        ``within_class_spread``: the mean over classes of the mean per-pixel squared distance of a
        class's prototypes to that class's mean prototype (``per_class_spread`` lists each);
        ``between_class_spread``: mean per-pixel squared distance of the class-mean prototypes to
        their (unweighted) mean; ``spread_ratio``: within / between (``None`` with a single class;
        near 0 when the prototypes form one tight cluster per class).
    """
    if shape_names is not None:
        class_names = shape_names
    x = check_images(x, None, "x")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x needs at least 2 images to define the data variance, got {n}")
    labels = _labels(labels, n, "labels")
    if not isinstance(scale, Mapping) and not scale >= 0:
        raise ValueError(f"scale must be non-negative, got {scale}")
    check_positive_int(batch_size, "batch_size")
    group = model.group
    x = x.to(group.bounds.device, group.bounds.dtype)
    data_variance = x.var(dim=0, unbiased=False).mean().item()
    if data_variance <= 0:
        raise ValueError("x has zero variance across the batch (all images identical): the error cannot be normalised")
    g = group.sample_uniform(n, scale=scale, generator=generator)
    proto = _batched(model.prototype, x, batch_size)
    # Bicubic warps overshoot [-1, 1] slightly, which a model's input check may reject.
    proto_moved = _batched(model.prototype, group.apply(x, g).clamp(-1.0, 1.0), batch_size)
    inv_mse = (proto - proto_moved).pow(2).flatten(1).mean(1).mean().item()

    flat = proto.flatten(1).double().cpu()
    present = labels.unique().tolist()
    means, spreads = {}, {}
    for s in present:
        members = flat[labels == s]
        means[s] = members.mean(0)
        spreads[s] = (members - means[s]).pow(2).mean(1).mean().item()
    centre = torch.stack(list(means.values())).mean(0)
    between = float(np.mean([(m - centre).pow(2).mean().item() for m in means.values()]))
    within = float(np.mean(list(spreads.values())))
    return {
        "invariance_error": inv_mse / data_variance,
        "invariance_mse": inv_mse,
        "data_variance": data_variance,
        "scale": dict(scale) if isinstance(scale, Mapping) else float(scale),
        "within_class_spread": within,
        "between_class_spread": between,
        "spread_ratio": within / between if between > 0 else None,
        "per_class_spread": {_name(s, class_names): v for s, v in spreads.items()},
    }


def _flatten_resamples(resampled: Tensor, labels: Tensor, real_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``(S, N, C, H, W)`` or ``(N, C, H, W)`` resamples as ``(S·N, C, H, W)`` with repeated labels."""
    if not isinstance(resampled, Tensor):
        raise ValueError(f"resampled must be a torch.Tensor, got {type(resampled).__name__}")
    if resampled.dim() == 5:
        if tuple(resampled.shape[1:]) != real_shape:
            raise ValueError(f"resampled must have shape (S, {', '.join(map(str, real_shape))}) to match real, "
                             f"got {tuple(resampled.shape)}")
        s = resampled.shape[0]
        # Row s·N + i of the flattened tensor is a resample of real image i.
        return resampled.reshape(-1, *real_shape[1:]), labels.repeat(s)
    if tuple(resampled.shape) != real_shape:
        raise ValueError(f"resampled must have shape {real_shape} or (S, *{real_shape}), got {tuple(resampled.shape)}")
    return resampled, labels


def recovery_metrics(real: Tensor, resampled: Tensor, shapes, *,
                     shape_names: Sequence[str] = SHAPE_NAMES) -> dict:
    """Per-shape Wasserstein-1 distance between real and resampled position/size marginals.

    Args:
        real: ``(N, 1, H, W)`` data images in ``[-1, 1]``.
        resampled: ``(S, N, 1, H, W)`` (``S`` resamples of each real image, as returned by
            ``SGM.resample``) or ``(N, 1, H, W)``.
        shapes: ``(N,)`` integer labels indexing ``shape_names``.
        shape_names: the name of each label.

    Returns:
        ``per_shape[name][stat] = {"w1", "relative"}`` for each shape present and each statistic
        ``com_x``, ``com_y``, ``area`` (see :func:`~sgm_pyro.analysis.image_statistics`), where
        ``relative = w1 / range`` and ``range`` (``ranges[stat]``) is max - min of the statistic
        over the real images of all shapes (``inf`` if that range is 0 while ``w1 > 0``);
        ``max_relative`` over all of them, ``within_5_percent = max_relative <= 0.05``, and
        ``num_blank_resampled``: resamples with no lit pixel, left out of the centre-of-mass
        comparisons (they have no centre) but counted in ``area``.
    """
    real = check_images(real, None, "real")
    labels = _labels(shapes, real.shape[0])
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(shape_names)):
        raise ValueError(f"shapes must be labels in [0, {len(shape_names) - 1}] (one per name in "
                         f"{tuple(shape_names)}), "
                         f"got values in [{labels.min().item()}, {labels.max().item()}]")
    flat, flat_labels = _flatten_resamples(resampled, labels, tuple(real.shape))
    real_stats = {k: v.double().cpu() for k, v in image_statistics(real).items()}
    res_stats = {k: v.double().cpu() for k, v in image_statistics(flat).items()}

    ranges = {}
    for stat in STATISTICS:
        values = real_stats[stat][torch.isfinite(real_stats[stat])]
        ranges[stat] = (values.max() - values.min()).item() if values.numel() else 0.0
    per_shape: dict[str, dict] = {}
    for k in labels.unique().tolist():
        entry = {}
        for stat in STATISTICS:
            r, q = real_stats[stat][labels == k], res_stats[stat][flat_labels == k]
            r, q = r[torch.isfinite(r)], q[torch.isfinite(q)]
            if r.numel() == 0 or q.numel() == 0:
                raise ValueError(f"no {'real' if r.numel() == 0 else 'resampled'} {shape_names[k]} image has lit "
                                 f"pixels: {stat} cannot be compared")
            w1 = wasserstein_1d(r, q)
            rel = w1 / ranges[stat] if ranges[stat] > 0 else (0.0 if w1 == 0 else math.inf)
            entry[stat] = {"w1": w1, "relative": rel}
        per_shape[shape_names[k]] = entry
    max_relative = max(e["relative"] for entry in per_shape.values() for e in entry.values())
    return {
        "per_shape": per_shape,
        "ranges": ranges,
        "max_relative": float(max_relative),
        "within_5_percent": bool(max_relative <= RECOVERY_TOLERANCE),
        "num_blank_resampled": int((~torch.isfinite(res_stats["com_x"])).sum().item()),
    }


def middle_band(com_y) -> tuple[float, float]:
    """The empty band between the two vertical clusters of real hearts.

    The sorted values are split at their largest gap; the band is the open interval from the
    largest value below the gap to the smallest value above it.

    Args:
        com_y: at least two finite values (any shape, flattened), e.g. real hearts' ``com_y``.

    Returns:
        ``(low, high)`` with ``low < high`` (``low == high`` only if all values are equal).
    """
    values = np.sort(as_sample(com_y, "com_y"))
    if values.size < 2:
        raise ValueError(f"com_y needs at least 2 values to find a gap between two bands, got {values.size}")
    i = int(np.argmax(np.diff(values)))
    return float(values[i]), float(values[i + 1])


def band_fraction(values, band: tuple[float, float]) -> float:
    """Fraction of ``values`` (finite, any shape) strictly inside the open interval ``band``."""
    v = as_sample(values, "values")
    low, high = band
    return float(np.mean((v > low) & (v < high)))


@torch.no_grad()
def rotation_samples_deg(model, x: Tensor, num_samples: int = 100, *, coordinate: str = "rot") -> Tensor:
    """Draws of the learned rotation for each image's prototype, in degrees.

    Args:
        model: exposes ``group.names``, ``prototype(x)`` and ``sample_eta(x_hat, S) -> (S, N, dim)``.
        x: ``(N, C, H, W)`` images in ``[-1, 1]``.
        num_samples: draws ``S`` per image.
        coordinate: the name of the rotation coordinate in ``model.group.names``.

    Returns:
        ``(S, N)`` float tensor on the CPU, wrapped to ``[-180, 180)``.
    """
    x = check_images(x, None, "x")
    check_positive_int(num_samples, "num_samples")
    names = tuple(model.group.names)
    if coordinate not in names:
        raise ValueError(f"the model's group has no {coordinate!r} coordinate (coordinates: {names})")
    eta = model.sample_eta(model.prototype(x), num_samples)
    if eta.dim() != 3 or eta.shape[:2] != (num_samples, x.shape[0]) or eta.shape[2] != len(names):
        raise ValueError(f"model.sample_eta returned shape {tuple(eta.shape)}, expected "
                         f"({num_samples}, {x.shape[0]}, {len(names)})")
    return wrap_degrees(torch.rad2deg(eta[..., names.index(coordinate)].double().cpu()))


@torch.no_grad()
def heart_metrics(model, hearts: Tensor, real_hearts_stats: dict | None = None, *, num_samples: int = 100,
                  num_resamples: int = 10) -> dict:
    """The hearts test: a point-mass rotation density and resamples that respect the two y-bands.

    Args:
        model: exposes ``group.names`` (with ``"rot"``), ``prototype``, ``sample_eta`` and ``resample``.
        hearts: ``(N, 1, H, W)`` real heart images in ``[-1, 1]``.
        real_hearts_stats: :func:`~sgm_pyro.analysis.image_statistics` of a reference set of real
            hearts, whose ``com_y`` defines the middle band (:func:`middle_band`: the largest gap
            of the sorted values, so the reference must contain both bands); ``None`` uses
            ``hearts`` themselves.
        num_samples: rotation draws per heart for the spread.
        num_resamples: resamples per heart for the band test.

    Returns:
        ``rotation_std_deg_mean`` / ``_median``: mean and median over hearts of the circular std
        (degrees) of each heart's learned rotation (goal: near 0, a point mass);
        ``middle_band``: ``[low, high]`` of real ``com_y``; ``resampled_middle_fraction``: the
        fraction of (non-blank) resampled hearts whose ``com_y`` lies in it (goal <= 0.10);
        ``real_middle_fraction``: the same for ``hearts`` (a sanity value; exactly 0 when the band
        comes from ``hearts`` themselves); ``num_blank_resampled``.
    """
    hearts = check_images(hearts, None, "hearts")
    check_positive_int(num_resamples, "num_resamples")
    rot = rotation_samples_deg(model, hearts, num_samples)
    spread = circular_std_deg(torch.deg2rad(rot), dim=0)

    real_com_y = image_statistics(hearts)["com_y"]
    reference = real_com_y if real_hearts_stats is None else \
        real_hearts_stats.get("com_y") if isinstance(real_hearts_stats, Mapping) else None
    if reference is None:
        raise ValueError("real_hearts_stats must contain 'com_y' (the output of image_statistics)")
    reference = torch.as_tensor(reference).double().reshape(-1)
    band = middle_band(reference[torch.isfinite(reference)])

    resampled = model.resample(hearts, num_resamples)
    flat, _ = _flatten_resamples(resampled, torch.zeros(hearts.shape[0], dtype=torch.long), tuple(hearts.shape))
    res_com_y = image_statistics(flat)["com_y"].double().cpu()
    lit = torch.isfinite(res_com_y)
    if not lit.any():
        raise ValueError("every resampled heart is blank (no lit pixel): the band test is undefined")
    real_lit = real_com_y[torch.isfinite(real_com_y)]
    return {
        "rotation_std_deg_mean": spread.mean().item(),
        "rotation_std_deg_median": float(np.median(spread.numpy())),  # torch's median picks the lower middle
        "middle_band": [band[0], band[1]],
        "resampled_middle_fraction": band_fraction(res_com_y[lit], band),
        "real_middle_fraction": band_fraction(real_lit, band) if real_lit.numel() else 0.0,
        "num_blank_resampled": int((~lit).sum().item()),
        "num_hearts": int(hearts.shape[0]),
    }
