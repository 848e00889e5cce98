"""Image figures: plain grids, prototypes grouped by label, and resamples next to their originals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from .figures import check_display_images, finish, new_figure, show_tiles, tile

# Inches per tiled image: large enough to read a 28x28 digit, small enough for a 16-wide grid.
_INCH_PER_IMAGE = 0.7


def image_grid(images: Tensor, nrow: int = 8, *, title: str | None = None, path=None) -> Figure:
    """A grid of images.

    Args:
        images: ``(N, C, H, W)`` in ``[-1, 1]``, ``C = 1`` (grayscale) or ``3`` (RGB).
        nrow: images per row (torchvision's convention).
        title: figure title.
        path: where to save (``.png``, ``.pdf`` or ``.svg``); ``None`` saves nothing.

    Returns:
        The :class:`~matplotlib.figure.Figure`.
    """
    images = check_display_images(images)
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive integer (images per row), got {nrow!r}")
    ncol = min(nrow, images.shape[0])
    rows = -(-images.shape[0] // ncol)
    fig = new_figure(ncol * _INCH_PER_IMAGE, rows * _INCH_PER_IMAGE + (0.4 if title else 0.0))
    show_tiles(fig.subplots(), tile(images, ncol))
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def _label_name(label: int, label_names: Sequence[str] | Mapping[int, str] | None) -> str:
    if label_names is None:
        return f"label {label}"
    try:
        return str(label_names[label])
    except (IndexError, KeyError):
        return f"label {label}"


def prototype_grid(x: Tensor, prototypes: Tensor, labels=None, *,
                   label_names: Sequence[str] | Mapping[int, str] | None = None, max_per_label: int = 8,
                   title: str | None = None, path=None) -> Figure:
    """Originals above their prototypes, one panel per label (e.g. per dSprites shape).

    Invariant prototypes of one shape should look identical along each panel's lower row.

    Args:
        x: ``(N, C, H, W)`` images in ``[-1, 1]``.
        prototypes: ``(N, C, H, W)``, the prototype of each image (``model.prototype(x)``).
        labels: optional ``(N,)`` integer labels; ``None`` shows one panel of the first images.
        label_names: a name per label (sequence indexed by label, or mapping).
        max_per_label: images shown per panel.
        title, path: as in :func:`image_grid`.
    """
    x, prototypes = check_display_images(x, "x"), check_display_images(prototypes, "prototypes")
    if x.shape != prototypes.shape:
        raise ValueError(f"x and prototypes must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(prototypes.shape)}")
    if max_per_label < 1:
        raise ValueError(f"max_per_label must be positive, got {max_per_label}")
    if labels is None:
        groups = [("", torch.arange(min(max_per_label, x.shape[0])))]
    else:
        labels = torch.as_tensor(labels).detach().cpu().reshape(-1)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"labels must have one entry per image ({x.shape[0]}), got {labels.shape[0]}")
        groups = [(_label_name(int(k), label_names), torch.nonzero(labels == k).flatten()[:max_per_label])
                  for k in labels.unique().tolist()]
    ncol = max(len(idx) for _, idx in groups)
    fig = new_figure(ncol * _INCH_PER_IMAGE + 0.6, len(groups) * 2 * _INCH_PER_IMAGE + (0.4 if title else 0.0))
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, (name, idx) in zip(axes, groups):
        # Blank (white) slots keep every panel on the same column grid when a label has fewer images.
        blank = torch.ones(ncol - len(idx), *x.shape[1:])
        show_tiles(ax, tile(torch.cat([x[idx], blank, prototypes[idx], blank]), ncol))
        ax.set_ylabel(f"{name}\nx / x̂".strip())
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def resample_grid(x: Tensor, resamples: Tensor, *, max_images: int = 8, title: str | None = None,
                  path=None) -> Figure:
    """Each original (first column) followed by its resamples, one image per row.

    Args:
        x: ``(N, C, H, W)`` images in ``[-1, 1]``.
        resamples: ``(S, N, C, H, W)``, e.g. ``model.resample(x, S)``.
        max_images: rows shown (the first images).
        title, path: as in :func:`image_grid`.
    """
    x = check_display_images(x, "x")
    if not isinstance(resamples, Tensor) or resamples.dim() != 5 or tuple(resamples.shape[1:]) != tuple(x.shape):
        got = tuple(resamples.shape) if isinstance(resamples, Tensor) else type(resamples).__name__
        raise ValueError(f"resamples must have shape (S, {', '.join(map(str, x.shape))}), got {got}")
    if max_images < 1:
        raise ValueError(f"max_images must be positive, got {max_images}")
    s = resamples.shape[0]
    m = min(max_images, x.shape[0])
    resamples = check_display_images(resamples[:, :m].reshape(-1, *x.shape[1:]), "resamples").view(s, m, *x.shape[1:])
    rows = torch.cat([x[:m, None], resamples.transpose(0, 1)], dim=1)  # (m, 1 + S, C, H, W)
    fig = new_figure((s + 1) * _INCH_PER_IMAGE, m * _INCH_PER_IMAGE + 0.4)
    ax = fig.subplots()
    show_tiles(ax, tile(rows.reshape(-1, *x.shape[1:]), s + 1))
    ax.set_xlabel("original | resamples")
    if title:
        fig.suptitle(title)
    return finish(fig, path)
