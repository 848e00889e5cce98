"""Retained host memory: a large tensor freed and allocated again must not fault its pages in anew."""

import os
import platform
import subprocess
import sys

import pytest
import torch

from sgm_pyro import host_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere retain_freed_memory returns False")
MIB = 2**20


@pytest.fixture
def restore_retention():
    before = host_memory.retains_freed_memory()
    yield
    host_memory.retain_freed_memory(before)


PROBE = """
import resource, torch
from sgm_pyro import host_memory

def faults(mib=40, reps=8):
    for _ in range(2):
        torch.empty(mib * 2**20 // 4).fill_(1.0)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        torch.empty(mib * 2**20 // 4).fill_(1.0)  # freed at once: the next one may reuse its block
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / reps

before = faults()
on = host_memory.retain_freed_memory()
print(before, on, faults(), resource.getpagesize())
"""


@needs_glibc
def test_retained_memory_is_reused_without_page_faults():
    # a fresh process: in this one earlier fits have switched retention on and grown the heap, whose
    # free blocks would serve the allocations whatever the thresholds are now
    env = {**os.environ, host_memory.ENV: "0"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True).stdout
    before, on, after, page = out.split()
    pages = 40 * MIB / int(page)
    assert float(before) > 0.9 * pages  # glibc's default: a fresh mmap, every page faulted in on every touch
    assert on == "True"
    assert float(after) < 0.3 * pages  # the heap's block again (now and then the heap grows)


def test_off_the_cpu_or_when_the_environment_says_0_nothing_is_switched_on(monkeypatch, restore_retention):
    host_memory.retain_freed_memory(False)
    assert host_memory.retain_for("meta") is False
    monkeypatch.setenv(host_memory.ENV, "0")
    assert host_memory.retain_for("cpu") is False and not host_memory.retains_freed_memory()
    monkeypatch.setenv(host_memory.ENV, "1")
    assert host_memory.retain_for("cpu") is GLIBC


@needs_glibc
def test_a_cpu_fit_switches_retention_on(monkeypatch, restore_retention):
    import sgm_pyro
    from sgm_pyro.inference import InferenceConfig, fit_inference

    host_memory.retain_freed_memory(False)
    monkeypatch.delenv(host_memory.ENV, raising=False)
    g = sgm_pyro.AffineGroup()
    inf = sgm_pyro.PrototypeInference(g, (1, 8, 8), hidden=(8,), rotation_head="real")
    fit_inference(inf, torch.rand(16, 1, 8, 8) * 2 - 1, InferenceConfig(steps=1, batch_size=8), progress=False)
    assert host_memory.retains_freed_memory()


@pytest.mark.parametrize("bad", [-1, 2**31])
def test_a_trim_threshold_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="trim_threshold must be in"):
        host_memory.retain_freed_memory(trim_threshold=bad)
