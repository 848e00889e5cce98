"""Learning-rate schedules: linear warm-up then cosine decay (SPEC 3 and 4)."""

from __future__ import annotations

import math


def warmup_cosine(total_steps: int, warmup_steps: int, final_fraction: float = 0.0):
    """A ``LambdaLR`` multiplier: ``0 → 1`` linearly over ``warmup_steps``, then cosine to ``final_fraction``."""
    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier
