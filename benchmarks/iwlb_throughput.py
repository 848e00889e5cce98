"""IWLB throughput and peak memory of the reference VAE on 28x28 images, chunked (SPEC 6).

    python benchmarks/iwlb_throughput.py --images 64 --ks 100,1000,5000 --chunk-size 100
    python benchmarks/iwlb_throughput.py --images 2000 --ks 300 --batch 250   # the protocol's test set

Prints, per K, the wall time, images x particles per second, test images per second, and the peak
memory the evaluation added: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak of
torch/numpy allocations traced by ``tracemalloc`` does not see torch's C++ allocator, so the CPU
figure is the rise of the process's maximum resident set size (``getrusage``), which only grows:
run the K values in increasing order and read each delta as "extra memory needed beyond the
previous runs" (0 means it fitted in what was already reserved). Memory is bounded by
``chunk_size``, not by K: that is the point of chunking.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from sgm_pyro.models import VAE


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def measure(vae: VAE, x: torch.Tensor, k: int, chunk_size: int, device: torch.device, batch: int | None = None) -> dict:
    """Timed ``log_likelihood`` of ``x: (N, 1, 28, 28)`` on ``device``, ``batch`` images per call (default all)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss = _max_rss_mib()
    t0 = time.perf_counter()
    step = batch or x.shape[0]
    bound = torch.cat([vae.log_likelihood(x[i: i + step], k, chunk_size=chunk_size) for i in range(0, x.shape[0], step)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else _max_rss_mib() - rss
    return {"K": k, "seconds": seconds, "image_particles_per_s": x.shape[0] * k / seconds,
            "images_per_s": x.shape[0] / seconds, "peak_extra_mib": peak, "max_rss_mib": _max_rss_mib(),
            "mean_bound": bound.mean().item()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64, help="test images scored per K")
    p.add_argument("--ks", default="100,1000,5000", help="comma-separated K values, increasing")
    p.add_argument("--chunk-size", type=int, default=100)
    p.add_argument("--batch", type=int, default=None, help="images per log_likelihood call (default: all at once)")
    p.add_argument("--channels", default="64,128", help="VAE conv widths (reference: 64,128)")
    p.add_argument("--hidden", type=int, default=256, help="VAE MLP width (reference: 256)")
    p.add_argument("--sigma", choices=("reference", "calibrated"), default="calibrated")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    vae = VAE((1, 28, 28), channels=tuple(int(c) for c in a.channels.split(",")), hidden=a.hidden,
              sigma=a.sigma).to(device).eval()
    x = (torch.rand(a.images, 1, 28, 28) * 2 - 1).to(device)  # throughput does not depend on content
    vae.log_likelihood(x[:2], 2)  # warm-up: first-call allocations and kernel selection
    print(f"device {device} ({torch.get_num_threads()} threads), VAE channels {a.channels}, hidden {a.hidden}, "
          f"{a.images} images, chunk_size {a.chunk_size}, batch {a.batch or a.images}")
    print(f"{'K':>6} {'seconds':>9} {'img*K/s':>10} {'images/s':>9} {'peak extra MiB':>15} {'max RSS MiB':>12}")
    for k in (int(v) for v in a.ks.split(",")):
        r = measure(vae, x, k, a.chunk_size, device, a.batch)
        print(f"{r['K']:>6} {r['seconds']:>9.2f} {r['image_particles_per_s']:>10.0f} {r['images_per_s']:>9.2f} "
              f"{r['peak_extra_mib']:>15.1f} {r['max_rss_mib']:>12.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
