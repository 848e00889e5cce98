"""Shared plumbing of the plotting functions: image tiling, figure creation and saving.

Figures are built with :class:`matplotlib.figure.Figure` directly rather than ``pyplot``: no global
figure registry (nothing leaks in loops, nothing depends on the interactive backend), so the
plots work headless and from worker threads. Nothing here calls ``show``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

SUFFIXES = (".png", ".pdf", ".svg")
# Separator between tiled images: white, so black (background) dSprites stay distinguishable.
_PAD_VALUE = 1.0


def check_display_images(images, name: str = "images") -> Tensor:
    """Validate displayable images ``(N, C, H, W)``, ``C`` in ``{1, 3}``, N > 0, finite; returns float CPU."""
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape (N, C, H, W) with C = 1 (grayscale) or 3 (RGB), "
                         f"got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 images)")
    images = images.detach().cpu().float()
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or inf pixels")
    return images


def tile(images: Tensor, ncol: int, pad: int = 1) -> np.ndarray:
    """Arrange images row by row into one array for a single ``imshow``.

    Args:
        images: ``(N, C, H, W)`` in ``[-1, 1]`` (values outside are clipped), ``C`` in ``{1, 3}``.
        ncol: images per row (the last row is padded with blanks).
        pad: separator width in pixels.

    Returns:
        ``(rows·(H+pad)+pad, ncol·(W+pad)+pad)`` for grayscale, with a trailing ``3`` for RGB,
        values in ``[0, 1]``.
    """
    n, c, h, w = images.shape
    ncol = max(1, min(ncol, n))
    nrows = -(-n // ncol)
    display = ((images.detach().cpu().float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
    canvas = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), _PAD_VALUE, dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top:top + h, left:left + w] = display[i]
    return canvas[..., 0] if c == 1 else canvas


def show_tiles(ax, canvas: np.ndarray) -> None:
    """``imshow`` a :func:`tile` canvas without axis ticks (grayscale mapped black to white)."""
    ax.imshow(canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with constrained layout; sizes in inches, kept within sane limits."""
    fig = Figure(figsize=(float(np.clip(width, 2.0, 30.0)), float(np.clip(height, 1.5, 40.0))),
                 layout="constrained")
    FigureCanvasAgg(fig)  # a canvas with a renderer, so that text sizes can be measured (fit_titles)
    return fig


def _wrap(text: str, fraction: float) -> str:
    """``text`` re-wrapped so that its widest line shrinks to about ``fraction`` of its width."""
    lines = text.split("\n")
    chars = max(8, int(max(len(line) for line in lines) * fraction))
    return "\n".join(textwrap.fill(line, chars, break_long_words=False) or line for line in lines)


def _titles(fig: Figure) -> list:
    """``(text, available width in pixels)`` for the suptitle and every axes title that is set."""
    out = []
    suptitle = getattr(fig, "_suptitle", None)  # matplotlib keeps the suptitle Text object here only
    if suptitle is not None and suptitle.get_text():
        out.append((suptitle, fig.bbox.width))
    for ax in fig.axes:
        for title in (ax.title, ax._left_title, ax._right_title):
            if title.get_text():
                out.append((title, max(ax.bbox.width, 1.0)))
    return out


def fit_titles(fig: Figure, *, margin: float = 0.96) -> Figure:
    """Wrap (else shrink) the suptitle and axes titles wider than their space, so none is clipped.

    A title may span the whole figure (suptitle) or its axes (axes title); constrained layout then
    makes room for the extra lines. Small figures (a prototype grid of two images) get long titles.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    for _ in range(3):  # wrapping changes the layout, which changes the space: settle in a few rounds
        fig.draw_without_rendering()
        renderer = canvas.get_renderer()
        changed = False
        for text, room in _titles(fig):
            width = text.get_window_extent(renderer).width
            if width <= margin * room:
                continue
            wrapped = _wrap(text.get_text(), margin * room / width)
            if wrapped != text.get_text():
                text.set_text(wrapped)
            else:  # one long word: no line break helps
                text.set_fontsize(text.get_fontsize() * margin * room / width)
            changed = True
        if not changed:
            break
    return fig


def finish(fig: Figure, path=None, *, dpi: int = 150) -> Figure:
    """Fit the titles (:func:`fit_titles`), save ``fig`` to ``path`` (format from the suffix;
    parent folders created) and return it."""
    fit_titles(fig)
    if path is not None:
        path = Path(path)
        if path.suffix.lower() not in SUFFIXES:
            raise ValueError(f"path must end in one of {SUFFIXES} (the format is taken from the suffix), got {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def to_numpy(values, name: str = "values") -> np.ndarray:
    """Any tensor / array / sequence as a flat float64 array with non-finite entries removed."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ValueError(f"{name} has no finite values to plot")
    return arr
