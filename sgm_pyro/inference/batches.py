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

    Data-parallel training (``world_size > 1``): every rank builds the same permutation and takes
    rank ``rank``'s slice of each global batch of ``batch_size · world_size`` images, so the ranks
    see disjoint images whose union is the batch a single process with that larger batch sees.
    """

    def __init__(self, images: Tensor, batch_size: int, seed: int = 0, *, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False) -> None:
        if batch_size * world_size > images.shape[0]:
            total = f"batch_size ({batch_size})" + (f" x {world_size} processes" if world_size > 1 else "")
            raise ValueError(f"{total} is larger than the dataset ({images.shape[0]} images)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self.rank, self.world_size = rank, world_size
        # CPU images bound for a GPU are gathered straight into page-locked memory, so the copy
        # to the device (non_blocking) runs asynchronously instead of waiting on the GPU.
        self.pin_memory = bool(pin_memory) and images.device.type == "cpu"
        self.epoch, self.position = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        # Kept where the images are: one copy per epoch rather than one per batch.
        return torch.randperm(self.images.shape[0], generator=g).to(self.images.device)

    def __iter__(self) -> Iterator[Tensor]:
        return self

    def __next__(self) -> Tensor:
        step = self.batch_size * self.world_size  # the global batch; position counts global images
        if self.position + step > self._perm.numel():
            self.epoch, self.position = self.epoch + 1, 0
            self._perm = self._permutation()
        start = self.position + self.rank * self.batch_size
        idx = self._perm[start: start + self.batch_size]
        self.position += step
        if self.pin_memory:
            out = torch.empty((idx.numel(), *self.images.shape[1:]), dtype=self.images.dtype, pin_memory=True)
            return torch.index_select(self.images, 0, idx, out=out)
        return self.images[idx]

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
        # Every batch (a shape read, no pixel scan): a stream of another size would train on it
        # while the history, the schedules and the checkpoint record ``batch_size``.
        if isinstance(batch, Tensor) and batch.dim() and batch.shape[0] != self.batch_size:
            raise ValueError(f"training batch {self.count} has {batch.shape[0]} images but batch_size is "
                             f"{self.batch_size}; make the stream yield batch_size images (e.g. "
                             f"DSpritesStream({self.batch_size}), or drop_last=True for a DataLoader) or pass its "
                             "batch size as batch_size")
        return batch

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        # A stream seeded by the caller cannot be rewound; fast-forward the iterator instead.
        for _ in range(int(state["count"]) - self.count):
            next(self)


def make_batches(data, batch_size: int, *, seed: int = 0, image_shape=None, rank: int = 0, world_size: int = 1,
                 device: torch.device | str | None = None):
    """A resumable batch iterator over ``data``: an image tensor, ``fn(batch_size)`` or an iterator.

    With ``world_size > 1`` an image tensor is sharded by rank (see :class:`TensorBatches`); a
    callable or an iterator is used as it is, so each rank must be given its own stream (a
    callable drawing from the global RNG is, since every rank seeds it differently). ``device``
    is where the batches will be used: CPU images bound for CUDA are gathered into pinned memory.
    """
    if isinstance(data, Tensor):
        check_images(data, image_shape, "images")
        pin = device is not None and torch.device(device).type == "cuda"
        return TensorBatches(data, batch_size, seed, rank=rank, world_size=world_size, pin_memory=pin)
    if callable(data) or hasattr(data, "__iter__"):
        return CallableBatches(data, batch_size, image_shape)
    raise ValueError("training data must be an image tensor (N, C, H, W), a callable batch_size -> batch, "
                     f"or an iterator of batches; got {type(data).__name__}")
