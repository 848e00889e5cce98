"""One place that turns a device name into a :class:`torch.device` and says clearly when it cannot.

Used by the ``sgm`` command line and at the public boundary of the fit functions, so that
``SGM.fit(..., device="cuda")`` on a machine without CUDA gives the same one-line error as
``sgm fit --device cuda`` rather than torch's assertion from deep inside a network.
"""

from __future__ import annotations

import torch

AUTO = ("", "auto")


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device called ``name``, checked to exist on this machine.

    Args:
        name: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a :class:`torch.device`, or ``None`` /
            ``""`` / ``"auto"`` for CUDA when it is available, else the CPU.

    Raises:
        ValueError: an unknown device name, CUDA asked for where torch has none, or a CUDA index
            beyond the devices present.
    """
    if name is None or (isinstance(name, str) and name.strip().lower() in AUTO):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {name!r} ({e}); expected e.g. 'cpu', 'cuda', 'cuda:0' or 'auto'") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(name)!r} was asked for but CUDA is not available here "
                             "(use device='cpu', or device='auto' to take CUDA when present)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(name)!r} was asked for but only {count} CUDA device(s) exist")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(name)!r} was asked for but MPS is not available here")
    return device


__all__ = ["resolve_device"]
