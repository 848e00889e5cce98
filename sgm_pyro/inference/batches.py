"""Batches from a tensor of images, a callable, or an iterator (e.g. the dSprites stream)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from ..validation import check_images


class TensorBatches:
    """Random batches without replacement from ``images``, reshuffled every epoch; resumable.

    The permutation comes from a private generator, so the order depends only on ``seed`` and the
    position, which :meth:`state_dict` records.
    """

    def __init__(self, images: Tensor, batch_size: int, seed: int = 0) -> None:
        if batch_size > images.shape[0]:
            raise ValueError(f"batch_size ({batch_size}) is larger than the dataset ({images.shape[0]} images)")
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self.epoch, self.position = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(self.images.shape[0], generator=g)

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        if self.position + self.batch_size > self._perm.numel():
            self.epoch, self.position = self.epoch + 1, 0
            self._perm = self._permutation()
        idx = self._perm[self.position: self.position + self.batch_size]
        self.position += self.batch_size
        return self.images[idx.to(self.images.device)]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = self._permutation()


class CallableBatches:
    """Batches from ``fn(batch_size)`` or from an iterator of batches; the state is a step count."""

    def __init__(self, source: Callable[[int], Tensor] | Iterable[Tensor], batch_size: int,
                 image_shape=None) -> None:
        self.batch_size, self.image_shape = batch_size, image_shape
        self._fn = source if callable(source) and not hasattr(source, "__next__") else None
        self._it = None if self._fn is not None else iter(source)
        self.count = 0

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        self.count += 1
        batch = self._fn(self.batch_size) if self._fn is not None else next(self._it)
        if self.count == 1:  # check the first batch once: a wrong image size fails clearly, not deep in a net
            check_images(batch, self.image_shape, "the first training batch")
        return batch

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        # A stream seeded by the caller cannot be rewound; fast-forward the iterator instead.
        for _ in range(int(state["count"]) - self.count):
            next(self)


def make_batches(data, batch_size: int, *, seed: int = 0, image_shape=None):
    """A resumable batch iterator over ``data``: an image tensor, ``fn(batch_size)`` or an iterator."""
    if isinstance(data, Tensor):
        check_images(data, image_shape, "images")
        return TensorBatches(data, batch_size, seed)
    if callable(data) or hasattr(data, "__iter__"):
        return CallableBatches(data, batch_size, image_shape)
    raise ValueError("training data must be an image tensor (N, C, H, W), a callable batch_size -> batch, "
                     f"or an iterator of batches; got {type(data).__name__}")
