"""Stage-1 and stage-2 step throughput at the reference settings: images/s, achieved GFLOP/s, % of sgemm.

    python benchmarks/stage_throughput.py [--device cuda] [--batch 512] [--sizes 28 64] [--min-time 3]
        [--equivariant] [--moments]

Stage 1: the reference pose MLP (2048, 1024, 512, 256) on raw pixels, 5 draws, both random views,
invertibility term: one optimiser step per batch. Stage 2: the default FlowPrior (feature MLP
(1024, 512, 256), 4 spline couplings), 5 draws, the library's own step
(``sgm_pyro.inference.stage2.svi_step`` with its global-norm clipped AdamW) and, for the
overhead of the Pyro program, a hand-written torch step on the same loss.

Stage 1 is timed twice: the library's own loop (``fit_inference``, per step: the difference of
a run of 2 + n steps and one of 2 steps, so set-up and the first, checked step drop out; the
median of three) and a hand-written step on the same loss with the library's AdamW.

FLOPs are counted once per step with ``torch.utils.flop_counter.FlopCounterMode`` (matrix
products and convolutions, forward and backward; the warps and elementwise work are not
counted, so the GFLOP/s are a lower bound of the work done). The peak is measured in the same
process: a 4096x4096 float32 matmul (sgemm) into a preallocated output, the best of two
measurements. A figure above that peak means a timing or counting error: the script refuses to
print it and exits with status 1. Like the training loops, the script keeps freed host memory in
the process on a CPU (:mod:`sgm_pyro.host_memory`; ``SGM_PYRO_RETAIN_HOST_MEMORY=0`` to compare).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, sync, time_call  # noqa: E402

import sgm_pyro  # noqa: E402
from sgm_pyro.host_memory import retain_for  # noqa: E402
from sgm_pyro.inference import InferenceConfig, InvarianceLoss, PriorConfig, fit_inference, private_param_store  # noqa: E402
from sgm_pyro.inference.optimizers import adamw  # noqa: E402
from sgm_pyro.inference.distributed import backward_loss_and_grads  # noqa: E402
from sgm_pyro.inference.stage2 import PriorLikelihoodLoss, make_optimizer, reaugmented_pairs, svi_step  # noqa: E402

MNIST_BOX = (0.25, 0.25, math.pi, 0.25, 0.25)


def sgemm_gflops(device: torch.device, n: int = 4096, min_time: float = 1.0, tries: int = 2) -> float:
    """The measured float32 matmul rate of this process, GFLOP/s (``2 n³`` FLOPs per product).

    The product goes into a preallocated output, so that the peak is the kernel's and not the
    allocator's (a fresh 64 MiB output faults its pages in on every call); the best of ``tries``.
    """
    a, b, c = (torch.randn(n, n, device=device) for _ in range(3))
    best = min(time_call(lambda: torch.mm(a, b, out=c), device, warmup=1, min_time=min_time) for _ in range(tries))
    return 2 * n**3 / best / 1e9


def flops_of(step) -> int:
    """FLOPs of one call of ``step`` (matrix products and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def stage1_step(size: int, batch: int, device: torch.device, rotation_head: str = "real"):
    g = sgm_pyro.AffineGroup(bounds=MNIST_BOX).to(device)
    inf = sgm_pyro.PrototypeInference(g, (1, size, size), rotation_head=rotation_head).to(device)
    loss = InvarianceLoss(num_draws=5, inv_weight=0.1)
    opt = adamw(inf.parameters(), lr=3e-4, weight_decay=1e-4)
    x = torch.rand(batch, 1, size, size, device=device) * 2 - 1

    def step():
        opt.zero_grad(set_to_none=True)
        loss(inf, x)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(inf.parameters(), 3.0)
        opt.step()
    return step


def fit_seconds_per_step(size: int, batch: int, device: torch.device, steps: int = 8, repeats: int = 3) -> float:
    """Seconds per step of the library's stage-1 loop (``fit_inference``) at the reference settings.

    The difference of a run of ``2 + steps`` and one of 2 steps, each from a fresh network, so the
    set-up and the first step (which runs every input check) cancel out; the median of ``repeats``
    such differences (one alone strayed by 10% on a 2-core machine).
    """
    g = sgm_pyro.AffineGroup(bounds=MNIST_BOX).to(device)
    images = torch.rand(4 * batch, 1, size, size, device=device) * 2 - 1

    def run(n: int) -> float:
        inf = sgm_pyro.PrototypeInference(g, (1, size, size), rotation_head="real")
        cfg = InferenceConfig(steps=n, batch_size=batch, blur_fraction=0.0, log_every=50)
        t0 = time.perf_counter()
        fit_inference(inf, images, cfg, device=device, progress=False)
        sync(device)
        return time.perf_counter() - t0
    run(2)  # warm-up
    return statistics.median((run(2 + steps) - run(2)) / steps for _ in range(repeats))


def stage2_steps(size: int, batch: int, device: torch.device):
    """(the library's stage-2 step, a hand-written torch step); the first must run in a param store scope."""
    g = sgm_pyro.AffineGroup(bounds=MNIST_BOX).to(device)
    # the reference pose head, so that the figure stays the reference's (re-augmentation runs it)
    model = sgm_pyro.SGM(g, (1, size, size), inference_kwargs=dict(rotation_head="real")).to(device)
    x = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    cfg = PriorConfig(steps=1000, batch_size=batch)
    prior = model.prior.train()
    optim, loss_and_grads = make_optimizer(cfg), backward_loss_and_grads(PriorLikelihoodLoss(5))

    def library_step():
        x_hat, eta = reaugmented_pairs(model.inference, x, 5, 0.75)
        svi_step(loss_and_grads, optim, prior, x_hat, eta)
    opt = torch.optim.AdamW(prior.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def torch_step():
        x_hat, eta = reaugmented_pairs(model.inference, x, 5, 0.75)
        opt.zero_grad(set_to_none=True)
        (-prior.distribution(x_hat).log_prob(eta).mean()).backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), cfg.clip_norm)
        opt.step()
    return library_step, torch_step


class Table:
    """Rows of images/s and GFLOP/s; any figure above the measured peak is refused (status 1)."""

    def __init__(self, peak: float) -> None:
        self.peak, self.refused = peak, 0

    def row(self, size: int, stage: str, batch: int, seconds: float, flops: int, note: str) -> None:
        gflops = flops / seconds / 1e9
        if gflops > self.peak:
            self.refused += 1
            print(f"{size:>5} {stage:>8}  REFUSED: {gflops:.1f} GFLOP/s exceeds the measured peak "
                  f"{self.peak:.1f} GFLOP/s (a timing or FLOP-count error)")
            return
        print(f"{size:>5} {stage:>8} {batch / seconds:>10.1f} {gflops:>9.1f} {100 * gflops / self.peak:>7.1f}%  {note}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64])
    p.add_argument("--min-time", type=float, default=3.0, help="seconds of repetitions per figure")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--equivariant", action="store_true", help="also time stage 1 with the equivariant rotation head")
    p.add_argument("--moments", action="store_true", help="also time stage 1 with the moment rotation head (the demo's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    retained = retain_for(device)
    torch.manual_seed(0)
    peak = sgemm_gflops(device, min_time=min(args.min_time, 2.0))
    print(f"machine: {machine(device)}; batch {args.batch}, 5 draws")
    if device.type == "cpu":
        print(f"freed host memory kept in the process (sgm_pyro.host_memory): {'yes' if retained else 'no'}")
    print(f"sgemm (4096x4096 float32 into a preallocated output, this process): {peak:.1f} GFLOP/s")
    print(f"{'size':>5} {'stage':>8} {'images/s':>10} {'GFLOP/s':>9} {'of sgemm':>8}  note")
    table = Table(peak)

    def timed(step) -> float:
        return time_call(step, device, warmup=1, min_time=args.min_time, max_reps=10)
    for size in args.sizes:
        step = stage1_step(size, args.batch, device)
        stage1_flops = flops_of(step)
        table.row(size, "1", args.batch, fit_seconds_per_step(size, args.batch, device), stage1_flops,
                  "reference MLP (2048,1024,512,256): sgm-pyro's fit_inference, per step")
        table.row(size, "1-step", args.batch, timed(step), stage1_flops,
                  "the same loss, a hand-written step (one AdamW)")
        if args.equivariant:
            step = stage1_step(size, args.batch, device, "equivariant")
            table.row(size, "1-equiv", args.batch, timed(step), flops_of(step),
                      "reference MLP + equivariant rotation head (8 copies, MLP (256,128))")
        if args.moments:
            step = stage1_step(size, args.batch, device, "moments")
            table.row(size, "1-moment", args.batch, timed(step), flops_of(step),
                      "reference MLP + moment rotation head (parameter-free; its FLOPs are not counted)")
        library_step, torch_step = stage2_steps(size, args.batch, device)
        with private_param_store():
            library_seconds = timed(library_step)
            library_flops = flops_of(library_step)
        torch_seconds = timed(torch_step)
        table.row(size, "2", args.batch, library_seconds, library_flops, "sgm-pyro stage-2 step (Pyro program)")
        table.row(size, "2-torch", args.batch, torch_seconds, flops_of(torch_step),
                  f"hand-written torch step; Pyro program overhead {library_seconds / torch_seconds:.3f}x")
    return 1 if table.refused else 0


if __name__ == "__main__":
    sys.exit(main())
