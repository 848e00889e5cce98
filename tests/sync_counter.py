"""Count host syncs (device-to-host reads) on the CPU with a ``TorchDispatchMode``.

On a GPU every read of a tensor's value by Python (``.item()``, ``float(t)``, ``bool(t)``,
``.tolist()``, a data-dependent shape such as ``nonzero``) blocks until the device has finished
all queued work. On the CPU these calls are cheap, but they go through the same aten operators,
so counting those operators on the CPU counts the syncs a GPU run would make::

    from sync_counter import SyncCounter

    with SyncCounter() as counter:
        train_step()
    assert counter.count <= 2, counter.report()

Not counted: scalar reads made by ``torch.optim`` of its ``step`` counters. torch keeps those on
the CPU (unless ``capturable=True``), so on a GPU they are host reads that wait for nothing.
"""

from __future__ import annotations

import sys
import traceback
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Operators whose result Python needs on the host, or whose output shape depends on the values.
SYNC_OPS = {
    aten._local_scalar_dense.default,  # .item(), float(), int(), bool(), .tolist() element reads
    aten.nonzero.default,
    aten.masked_select.default,
    aten.unique_consecutive.default,
    aten._unique2.default,
    aten.repeat_interleave.Tensor,
    aten.equal.default,
    aten.is_nonzero.default,
}


def _is_optimizer_step_read() -> bool:
    """Whether the current scalar read comes from ``torch.optim`` reading a CPU ``step`` counter."""
    frame = sys._getframe(2)
    for _ in range(12):
        if frame is None:
            return False
        if frame.f_code.co_name == "_get_value" and "torch/optim" in frame.f_code.co_filename.replace("\\", "/"):
            return True
        frame = frame.f_back
    return False


class SyncCounter(TorchDispatchMode):
    """Counts calls of :data:`SYNC_OPS` while active; ``where`` keeps a short stack per call."""

    def __init__(self, keep_stacks: bool = True) -> None:
        super().__init__()
        self.keep_stacks = keep_stacks
        self.ops: Counter[str] = Counter()
        self.where: list[str] = []

    @property
    def count(self) -> int:
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNC_OPS and not (func is aten._local_scalar_dense.default and _is_optimizer_step_read()):
            self.ops[str(func)] += 1
            if self.keep_stacks:
                frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename.replace("\\", "/")]
                self.where.append(" <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}"
                                              for f in reversed(frames[-6:])))
        return func(*args, **(kwargs or {}))

    def report(self) -> str:
        """What was counted and from where (for assertion messages)."""
        return f"{self.count} syncs {dict(self.ops)}:\n" + "\n".join(self.where)
