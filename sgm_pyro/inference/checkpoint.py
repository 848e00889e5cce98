"""Atomic, device-neutral checkpoints; the implementation lives in :mod:`sgm_pyro.checkpoint`.

Kept here because the training loops write them; the models load them too, so the code sits below
both packages.
"""

from ..checkpoint import CheckpointError, load_checkpoint, save_atomic

__all__ = ["CheckpointError", "load_checkpoint", "save_atomic"]
