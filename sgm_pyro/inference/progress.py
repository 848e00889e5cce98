"""Progress display and the NaN guard shared by the training loops."""

from __future__ import annotations

import math

from tqdm.auto import tqdm


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False)


def non_finite_loss(value: float, step: int, stage: str) -> NonFiniteLossError:
    """The error for a NaN or infinite loss ``value`` at ``step`` of ``stage``."""
    return NonFiniteLossError(
        f"{stage}: the loss became {value} at step {step}; training stopped (the last good checkpoint is kept). "
        "Try a lower learning rate or stronger gradient clipping.")


def check_finite(value: float, step: int, stage: str) -> None:
    if not math.isfinite(value):
        raise non_finite_loss(value, step, stage)
