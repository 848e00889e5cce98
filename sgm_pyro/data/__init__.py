"""Data sets: procedural dSprites, MNIST / Fashion-MNIST IDX readers, NPZ arrays, rotated MNIST.

Every loader returns images as float32 ``(N, C, H, W)`` in [-1, 1] (background −1). ``DATASETS``
maps a data set name to its loader, so configs say ``dataset = "mnist"`` and the code maps it here:

* ``"dsprites"``: :func:`dsprites` ``(n, *, laws, seed, device, generator, grid) -> (images, latents)``;
* ``"mnist"``, ``"fashion-mnist"``: ``(root, split) -> (images, labels)``.
"""

from collections.abc import Callable

from .dsprites import DSpritesStream, dsprites, render_dsprites, sample_latents
from .idx import load_fashion_mnist, load_mnist, read_idx, write_idx
from .laws import (SHAPES, DSpritesLaws, ShapeLaw, choice, constant, mixture, paper_laws, trunc_normal, uniform,
                   uniform_laws)
from .npz import load_npz, split_indices
from .rotate import rotate_fixed
from .recovery import TASKS as RECOVERY_TASKS, RecoveryData, RecoveryTask  # the recovery benchmark

DATASETS: dict[str, Callable] = {
    "dsprites": dsprites,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
}

__all__ = [
    "RECOVERY_TASKS", "RecoveryData", "RecoveryTask",
    "DATASETS", "SHAPES", "DSpritesLaws", "DSpritesStream", "ShapeLaw", "choice", "constant", "dsprites",
    "load_fashion_mnist", "load_mnist", "load_npz", "mixture", "paper_laws", "read_idx", "render_dsprites",
    "rotate_fixed", "sample_latents", "split_indices", "trunc_normal", "uniform", "uniform_laws", "write_idx",
]
