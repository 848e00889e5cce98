"""Keep freed host memory in the process, so that a CPU training step does not fault its pages in anew.

glibc serves every allocation above its mmap threshold (at most 32 MiB, adjusted as blocks are
freed) with a fresh ``mmap`` and gives it back with ``munmap`` when it is freed. A stage-1 step of
the reference pose network at batch 512 allocates dozens of activations of 20 to 40 MiB, so on
every step the kernel zeroes and maps each of their pages again: on a 2-core Intel Xeon GELU on a
40 MiB tensor took 18.1 ms with 10,241 page faults against 9.4 ms with none, and the reference
stage 1 ran 16% to 18% faster at 28x28 and 96% at 64x64 once freed blocks stayed on the heap
(docs/results.md §2, with the fused optimiser of the same change). PyTorch's own
CPU tuning guide recommends a caching allocator (jemalloc, tcmalloc) preloaded for the same
reason; this does the same job with the allocator already loaded, through ``mallopt``.

The setting is process-wide and lasts until it is switched off: blocks stay on the heap instead of
going back to the system, so the process keeps its peak resident memory (as a GPU caching
allocator does) up to ``trim_threshold`` of free memory at the top of the heap. The training loops
switch it on when they train on the CPU; ``SGM_PYRO_RETAIN_HOST_MEMORY=0`` in the environment
keeps glibc's defaults. Elsewhere (macOS, Windows, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import torch

ENV = "SGM_PYRO_RETAIN_HOST_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_GLIBC_DEFAULTS = {"mmap_threshold": 128 * 1024, "trim_threshold": 128 * 1024}
_INT_MAX = 2**31 - 1
_state = {"retained": False}


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def retain_freed_memory(enable: bool = True, *, trim_threshold: int = _INT_MAX) -> bool:
    """Serve large host allocations from the heap and keep freed blocks there (glibc only).

    Args:
        enable: ``True`` raises the mmap threshold to its maximum and the trim threshold to
            ``trim_threshold``; ``False`` restores glibc's defaults (128 KiB each, with the dynamic
            mmap threshold off, since glibc cannot be told to turn it back on).
        trim_threshold: free memory at the top of the heap, in bytes, above which glibc gives
            memory back to the system (at most ``2**31 - 1``).

    Returns:
        Whether the process now retains freed memory: ``False`` where the C library is not glibc.

    Raises:
        ValueError: ``trim_threshold`` outside ``[0, 2**31 - 1]``.
    """
    if not 0 <= int(trim_threshold) <= _INT_MAX:
        raise ValueError(f"trim_threshold must be in [0, {_INT_MAX}] bytes, got {trim_threshold}")
    libc = _libc()
    if libc is None:
        _state["retained"] = False
        return False
    mmap, trim = (_INT_MAX, int(trim_threshold)) if enable else \
        (_GLIBC_DEFAULTS["mmap_threshold"], _GLIBC_DEFAULTS["trim_threshold"])
    # mallopt returns 1 on success; some glibc releases refuse an mmap threshold above half their
    # heap size (32 MiB on 64-bit), and then that ceiling still keeps most activations on the heap
    ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap)) == 1
    if not ok and enable:
        ok = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(32 * 1024 * 1024)) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim)) == 1 and ok
    _state["retained"] = bool(enable and ok)
    return _state["retained"]


def retains_freed_memory() -> bool:
    """Whether :func:`retain_freed_memory` has switched retention on in this process."""
    return _state["retained"]


def retain_for(device: torch.device | str) -> bool:
    """What the training loops call: retain freed memory when training on the CPU, unless the
    environment says ``SGM_PYRO_RETAIN_HOST_MEMORY=0``. Returns whether memory is retained."""
    if torch.device(device).type != "cpu" or os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return retains_freed_memory()
    return retains_freed_memory() or retain_freed_memory()


__all__ = ["ENV", "retain_for", "retain_freed_memory", "retains_freed_memory"]
