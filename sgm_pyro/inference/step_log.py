"""Per-step training values kept on the device and read in one host sync every ``log_every`` steps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .progress import non_finite_loss


class StepLog:
    """A buffer of per-step values ``(len(names),)``, flushed into ``history`` lists of floats.

    ``history[name]`` gets one float per step, exactly as if every step had been read at once, but
    the device is waited on only at :meth:`flush`: every ``log_every`` steps, before a checkpoint,
    at validation and at the end. The first value (the loss) is checked there: a NaN or infinite
    loss raises :class:`~sgm_pyro.inference.NonFiniteLossError` naming the first bad step, and the steps before it
    are kept in the history. ``display`` names extra values (not stored) for the progress bar.

    Args:
        history: the stage's history; ``history["step"]`` and ``history[name]`` lists are extended.
        names: the stored values, loss first.
        stage: ``"stage 1"`` or ``"stage 2"`` (for the error message).
        log_every: steps between reads.
        display: names of extra trailing values, returned by :meth:`flush` but not stored.
    """

    def __init__(self, history: dict[str, list], names: Sequence[str], stage: str, log_every: int,
                 display: Sequence[str] = ()) -> None:
        self.history, self.names, self.stage = history, tuple(names), stage
        self.log_every, self.display = int(log_every), tuple(display)
        self._steps: list[int] = []
        self._values: list[Tensor] = []

    def append(self, step: int, values: Tensor) -> None:
        """Record ``values: (len(names) + len(display),)`` of ``step`` without reading them."""
        self._steps.append(step)
        self._values.append(values.detach())

    def due(self, step: int) -> bool:
        """Whether ``step`` (just taken) ends a logging period."""
        return (step + 1) % self.log_every == 0

    def flush(self) -> dict[str, float]:
        """Read the buffered values (one host sync) into the history; returns the last step's values."""
        if not self._values:
            return {}
        rows = torch.stack(self._values).tolist()
        steps, self._steps, self._values = self._steps, [], []
        for step, row in zip(steps, rows):
            if not math.isfinite(row[0]):
                raise non_finite_loss(row[0], step, self.stage)
            self.history["step"].append(step)
            for name, value in zip(self.names, row):
                self.history.setdefault(name, []).append(value)  # a value added since an older checkpoint
        return dict(zip(self.names + self.display, rows[-1]))
