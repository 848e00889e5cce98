"""Readers of the IDX format of MNIST and Fashion-MNIST (gzipped or raw); nothing is downloaded.

An IDX file is a 4-byte magic number ``00 00 <dtype> <ndim>``, ``ndim`` big-endian uint32
dimensions, then the data in C order. The MNIST files use dtype ``0x08`` (unsigned byte): image
files have magic 2051 (``0x00000803``: 3 dims, N x 28 x 28), label files 2049 (``0x00000801``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
UBYTE = 0x08
_KIND = {IMAGES_MAGIC: "an image file", LABELS_MAGIC: "a label file"}

MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of http://yann.lecun.com/exdb/mnist/)",)
FASHION_MNIST_URLS = ("https://github.com/zalandoresearch/fashion-mnist "
                      "(files at http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/)",)
SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike, *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes, gzipped (detected from its content) or raw.

    Args:
        path: the file.
        magic: when given, the magic number the file must have (2051 images, 2049 labels).

    Returns:
        a writable ``uint8`` array with the header's dimensions.

    Raises:
        ValueError: not IDX, a dtype other than 0x08, the wrong magic number, a corrupt gzip
            stream, or a size that does not match the header's dimensions.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from err
    if len(raw) < 4:
        raise ValueError(f"{path}: expected an IDX header of at least 4 bytes, got {len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file: the magic number must start with two zero bytes, "
                         f"got {raw[:4].hex()}")
    found = int.from_bytes(raw[:4], "big")
    if raw[2] != UBYTE:
        raise ValueError(f"{path}: unsupported IDX data type 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: expected magic number {magic} ({_KIND.get(magic, 'IDX')}), "
                         f"got {found} ({_KIND.get(found, f'{raw[3]}-dimensional IDX')})")
    ndim = raw[3]
    if ndim == 0:
        raise ValueError(f"{path}: expected at least one dimension in the IDX header, got 0")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header: {ndim} dimensions need {header} bytes, file has {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: file size does not match the header: dimensions {dims} need {expected} "
                         f"bytes of data, the file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a ``uint8`` array as IDX (gzipped when ``path`` ends in ``.gz``); returns the path.

    A 3-D array gets magic 2051 and a 1-D array 2049, as in MNIST (the magic number is just
    ``0x0008`` followed by the dimension count). Meant for tests and small conversions.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx expects a uint8 array, got dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx expects 1 to 255 dimensions, got {array.ndim}")
    if any(d >= 2**32 for d in array.shape):
        raise ValueError(f"write_idx: every dimension must fit in 32 bits, got {array.shape}")
    header = bytes([0, 0, UBYTE, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def from_uint8(images: np.ndarray) -> Tensor:
    """uint8 pixels ``(N, C, H, W)`` in 0..255 → float32 tensor in [-1, 1] (x / 127.5 − 1)."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)


def load_mnist(root: str | os.PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """Load MNIST from the four standard IDX files in ``root`` (``.gz`` or uncompressed).

    Returns:
        ``images`` float32 ``(N, 1, 28, 28)`` in [-1, 1] and ``labels`` int64 ``(N,)``;
        N = 60,000 for ``split="train"``, 10,000 for ``"test"``.

    Raises:
        FileNotFoundError: naming the expected files, the directory and where to download them.
        ValueError: a bad split name, a malformed file, or image and label counts that differ.
    """
    return _load_pair(root, split, "MNIST", MNIST_URLS)


def load_fashion_mnist(root: str | os.PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """Load Fashion-MNIST from its four IDX files in ``root``; same layout and errors as :func:`load_mnist`."""
    return _load_pair(root, split, "Fashion-MNIST", FASHION_MNIST_URLS)


def expected_files(split: str) -> tuple[str, str]:
    """The standard (gzipped) image and label file names of a split: ``train`` or ``test``."""
    if split not in SPLIT_PREFIX:
        raise ValueError(f"split must be one of {sorted(SPLIT_PREFIX)}, got {split!r}")
    prefix = SPLIT_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"


def _load_pair(root: str | os.PathLike, split: str, name: str, urls: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    image_name, label_name = expected_files(split)
    root = Path(root)
    all_files = [f for s in SPLIT_PREFIX for f in expected_files(s)]
    where = f"Download them from {' or '.join(urls)}; this package never downloads."
    if not root.is_dir():
        raise FileNotFoundError(f"{name} directory {str(root)!r} does not exist. Expected the files "
                                f"{', '.join(all_files)} (gzipped or not) in it. {where}")
    paths, missing = [], []
    for file in (image_name, label_name):
        found = [root / f for f in (file, file.removesuffix(".gz")) if (root / f).is_file()]
        paths.append(found[0] if found else None)
        if not found:
            missing.append(file)
    if missing:
        raise FileNotFoundError(f"{name} {split} split: missing {', '.join(missing)} (or the same name without "
                                f".gz) in {str(root)!r}. Expected {image_name} and {label_name} there. {where}")
    images = read_idx(paths[0], magic=IMAGES_MAGIC)
    labels = read_idx(paths[1], magic=LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{name} {split} split: {images.shape[0]} images in {paths[0].name} but "
                         f"{labels.shape[0]} labels in {paths[1].name}")
    return from_uint8(images[:, None]), torch.from_numpy(labels).long()
