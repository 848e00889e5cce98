"""Image arrays stored in ``.npz`` files, and seeded splits of a data set.

``../shared/data/mnist10k.npz`` (10,000 MNIST digits, next to the checkout) is such a file; it is
**sorted by label**, so shuffle before splitting it: ``train, val = split_indices(len(images), (8000, 2000), seed=0)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .idx import from_uint8

LAYOUTS = ("NHW", "NHWC", "NCHW")
_CHANNELS = (1, 3, 4)


def load_npz(path: str | os.PathLike, images_key: str = "images", labels_key: str | None = "labels", *,
             layout: str | None = None) -> tuple[Tensor, Tensor | None]:
    """Load images (and labels) from an ``.npz`` file into the package's image layout.

    Args:
        path: the ``.npz`` file (read without pickle).
        images_key: name of the image array: ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``,
            either integers in 0..255 (e.g. uint8) or floats already in [-1, 1].
        labels_key: name of the label array, integers ``(N,)``; ``None`` to load no labels.
        layout: ``"NHW"``, ``"NHWC"`` or ``"NCHW"``; guessed from the shape when ``None`` (C is
            1, 3 or 4), and required when the guess is ambiguous.

    Returns:
        ``images`` float32 ``(N, C, H, W)`` in [-1, 1] (integers map by x / 127.5 − 1), and
        ``labels`` int64 ``(N,)`` or ``None``.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        images = _get(data, images_key, path)
        labels = None if labels_key is None else _get(data, labels_key, path)
    images = _to_nchw(images, layout, path)
    if images.size == 0:
        raise ValueError(f"{path}: {images_key!r} is empty (shape {images.shape})")
    out = _to_float(images, path, images_key)
    if labels is None:
        return out, None
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: expected {labels_key!r} to be integers of shape ({images.shape[0]},), "
                         f"got {labels.dtype} of shape {labels.shape}")
    return out, torch.from_numpy(labels.astype(np.int64))


def split_indices(n: int, sizes: Sequence[int], seed: int = 0) -> list[Tensor]:
    """Disjoint random index sets of the given ``sizes`` from ``range(n)``, reproducible by ``seed``.

    ``sum(sizes)`` may be less than ``n`` (the rest is left out). Returns one int64 tensor per size;
    use it as ``images[idx]``. Shuffling here is what makes label-sorted files usable.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"sizes must be non-negative ints summing to at most n={n}, got {list(sizes)}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.split(perm[: sum(sizes)], list(sizes)))


def _get(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    if key not in data.files:
        raise ValueError(f"{path}: no array named {key!r}; the file holds {sorted(data.files)}")
    return data[key]


def _to_nchw(images: np.ndarray, layout: str | None, path: Path) -> np.ndarray:
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or None, got {layout!r}")
    if layout is None:
        if images.ndim == 3:
            layout = "NHW"
        elif images.ndim == 4:
            first, last = images.shape[1] in _CHANNELS, images.shape[3] in _CHANNELS
            if first == last:
                raise ValueError(f"{path}: cannot tell channels-first from channels-last for shape "
                                 f"{images.shape}; pass layout='NCHW' or layout='NHWC'")
            layout = "NCHW" if first else "NHWC"
    if layout is None or images.ndim != len(layout):
        raise ValueError(f"{path}: expected images of shape (N, H, W), (N, H, W, C) or (N, C, H, W)"
                         f"{'' if layout is None else f' matching layout {layout!r}'}, got shape {images.shape}")
    if layout == "NHW":
        return images[:, None]
    return images.transpose(0, 3, 1, 2) if layout == "NHWC" else images


def _to_float(images: np.ndarray, path: Path, key: str) -> Tensor:
    if images.dtype == np.uint8:
        return from_uint8(images)
    if np.issubdtype(images.dtype, np.integer):
        low, high = images.min(), images.max()
        if low < 0 or high > 255:
            raise ValueError(f"{path}: integer {key!r} must be in 0..255, got values in [{low}, {high}]")
        return from_uint8(images.astype(np.uint8))
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise ValueError(f"{path}: {key!r} contains NaN or infinite values")
        low, high = images.min(), images.max()
        if low < -1 or high > 1:
            raise ValueError(f"{path}: float {key!r} must already be in [-1, 1], got values in "
                             f"[{low:.4g}, {high:.4g}]; store uint8 0..255 or rescale")
        return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    raise ValueError(f"{path}: {key!r} must be integers in 0..255 or floats in [-1, 1], got dtype {images.dtype}")
