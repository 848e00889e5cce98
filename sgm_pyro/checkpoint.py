"""Atomic, code-free, device-neutral checkpoints: write CPU tensors to a temporary file, fsync, rename.

Every tensor is saved on the CPU and loaded on the CPU by default, so a checkpoint written on a
GPU loads on a machine without one, and RNG states (CPU ``ByteTensor``s) stay where
``torch.set_rng_state`` needs them. Callers move what they load to their device themselves
(``module.load_state_dict`` and ``optimizer.load_state_dict`` copy onto the parameters' device).
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, corrupted, or from a different model."""


def to_cpu(obj):
    """``obj`` with every tensor in nested dicts, lists and tuples detached and moved to the CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        out = {k: to_cpu(v) for k, v in obj.items()}
        if isinstance(obj, OrderedDict):  # a state_dict: keep its version metadata
            out = OrderedDict(out)
            if hasattr(obj, "_metadata"):
                out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    """Save ``obj`` (its tensors moved to the CPU) so that ``path`` is either the old or the new file, never partial."""
    obj = to_cpu(obj)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no code runs from the file), on the CPU by default."""
    path = Path(path)
    if path.is_dir():  # a run folder: name the file inside it
        inside = [p for p in ("model.pt", "checkpoint.pt") if (path / p).is_file()]
        raise FileNotFoundError(f"{path} is a folder, not a checkpoint file; pass "
                                + (f"{path / inside[0]}" if inside else "the .pt file (a run folder holds model.pt)"))
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, foreign object...
        raise CheckpointError(f"checkpoint {path} is unreadable (truncated or corrupted?): {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a dictionary")
    return obj
