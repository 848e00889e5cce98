"""Shared helpers of the benchmark scripts: device choice, timing, machine description."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, *, warmup: int = 2, min_time: float = 1.0,
              max_reps: int = 50) -> float:
    """Median-free simple timer: seconds per call averaged over repetitions lasting at least ``min_time``."""
    for _ in range(warmup):
        fn()
    sync(device)
    reps, start = 0, time.perf_counter()
    while reps < max_reps:
        fn()
        reps += 1
        sync(device)
        if time.perf_counter() - start >= min_time:
            break
    return (time.perf_counter() - start) / reps


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads (torch {torch.__version__})")
