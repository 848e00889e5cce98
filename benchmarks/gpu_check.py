"""End-to-end device check: a small fit, resampling, IWLB and ArviZ export, with throughput.

    python benchmarks/gpu_check.py              # CUDA when available, else CPU
    python benchmarks/gpu_check.py --device cpu

Every tensor and parameter must follow ``device=``: the script asserts that the outputs live on the
requested device and prints images/s for each part, so CPU and GPU runs compare in one table.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, sync  # noqa: E402

import sgm_pyro  # noqa: E402
from sgm_pyro.data import dsprites  # noqa: E402


def timed(label: str, n_images: int, device: torch.device, fn):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    seconds = time.perf_counter() - start
    print(f"{label:<34} {seconds:8.2f} s {n_images / seconds:12.1f} images/s")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    torch.manual_seed(0)
    print(f"machine: {machine(device)}")
    x, _ = dsprites(2048, seed=0, device=device)
    group = sgm_pyro.AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=True)
    model = sgm_pyro.SGM(group, (1, 64, 64), inference_kwargs=dict(input_size=32, hidden=(512, 256)),
                         prior_kwargs=dict(input_size=32, feature_hidden=(256,), hidden=(128, 128)))
    b, s = args.batch, args.steps
    timed("stage 1 (invariance), per image", b * s, device, lambda: model.fit(
        x, inference_steps=s, prior_steps=0, batch_size=b, device=device, progress=False))
    timed("stage 2 (prior, Pyro SVI)", b * s, device, lambda: model.fit(
        x, inference_steps=0, prior_steps=s, batch_size=b, device=device, progress=False))
    new = timed("resample (8 per image)", 8 * 512, device, lambda: model.resample(x[:512], 8))
    assert new.device.type == device.type, f"resamples on {new.device}, expected {device}"
    k = 100
    bound = timed(f"IWLB, K={k} (images x samples)", 256 * k, device, lambda: sgm_pyro.iwlb(
        model.model, model.guide, x[:256], num_samples=k, chunk_size=50))
    assert bound.device.type == device.type and torch.isfinite(bound).all()
    from sgm_pyro.analysis import to_inference_data
    idata = timed("ArviZ export (16 images, 200 draws)", 16, device,
                  lambda: to_inference_data(model, x[:16], num_samples=200))
    print(f"IWLB mean {bound.mean().item():.1f} nats; ArviZ groups: {', '.join(idata.groups())}; "
          f"max Pareto k {float(idata.sample_stats['pareto_k'].max()):.2f}")
    print("device check passed")


if __name__ == "__main__":
    main()
