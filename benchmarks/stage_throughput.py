"""Stage-1 and stage-2 step throughput (images/s) at the reference settings, and Pyro's SVI overhead.

    python benchmarks/stage_throughput.py [--device cuda] [--batch 512] [--sizes 28 64]

Stage 1: the reference pose MLP (2048, 1024, 512, 256) on raw pixels, 5 draws, both random views,
invertibility term: one optimiser step per batch. Stage 2: the default FlowPrior (feature MLP
(1024, 512, 256), 4 spline couplings), 5 draws; the same step is timed through ``pyro.infer.SVI``
and as a hand-written torch loop on the same loss, and their ratio is the SVI overhead.
Compare with SPEC 10: the reference JAX code does about 90 images/s (stage 1, 28x28), 19-21
images/s (stage 1, 64x64) and 320-360 images/s (stage 2, 28x28) on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, time_call  # noqa: E402

import sgm_pyro  # noqa: E402
from sgm_pyro.inference import InvarianceLoss, PriorConfig, private_param_store  # noqa: E402
from sgm_pyro.inference.stage2 import (PriorLikelihoodLoss, empty_guide, eta_log_prob, make_optimizer,  # noqa: E402
                                       prior_program, reaugmented_pairs)


def stage1_rate(size: int, batch: int, device: torch.device) -> float:
    g = sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25)).to(device)
    inf = sgm_pyro.PrototypeInference(g, (1, size, size)).to(device)
    loss = InvarianceLoss(num_draws=5, inv_weight=0.1)
    opt = torch.optim.AdamW(inf.parameters(), lr=3e-4, weight_decay=1e-4)
    x = torch.rand(batch, 1, size, size, device=device) * 2 - 1

    def step():
        opt.zero_grad(set_to_none=True)
        loss(inf, x)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(inf.parameters(), 3.0)
        opt.step()
    return batch / time_call(step, device, warmup=1, min_time=3.0, max_reps=5)


def stage2_rates(size: int, batch: int, device: torch.device) -> tuple[float, float]:
    import pyro
    g = sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25)).to(device)
    model = sgm_pyro.SGM(g, (1, size, size)).to(device)
    x = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    cfg = PriorConfig(steps=1000, batch_size=batch)
    prior = model.prior.train()
    with private_param_store():
        svi = pyro.infer.SVI(prior_program, empty_guide, make_optimizer(cfg), loss=PriorLikelihoodLoss(5))

        def pyro_step():
            x_hat, eta = reaugmented_pairs(model.inference, x, 5, 0.75)
            svi.step(prior, x_hat, eta)
        pyro_rate = batch / time_call(pyro_step, device, warmup=1, min_time=3.0, max_reps=10)
    opt = torch.optim.AdamW(prior.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def torch_step():
        x_hat, eta = reaugmented_pairs(model.inference, x, 5, 0.75)
        opt.zero_grad(set_to_none=True)
        (-prior.distribution(x_hat).log_prob(eta).mean()).backward()
        for p in prior.parameters():  # the same per-parameter clipping as Pyro's clip_args
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, cfg.clip_norm)
        opt.step()
    torch_rate = batch / time_call(torch_step, device, warmup=1, min_time=3.0, max_reps=10)
    return pyro_rate, torch_rate


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64])
    args = p.parse_args(argv)
    device = pick_device(args.device)
    torch.manual_seed(0)
    print(f"machine: {machine(device)}; batch {args.batch}, 5 draws")
    print(f"{'size':>5} {'stage':>7} {'images/s':>10}  note")
    for size in args.sizes:
        print(f"{size:>5} {'1':>7} {stage1_rate(size, args.batch, device):>10.1f}  reference MLP (2048,1024,512,256)")
        pyro_rate, torch_rate = stage2_rates(size, args.batch, device)
        print(f"{size:>5} {'2':>7} {pyro_rate:>10.1f}  Pyro SVI step")
        print(f"{size:>5} {'2-torch':>7} {torch_rate:>10.1f}  hand-written torch step; "
              f"SVI overhead {torch_rate / pyro_rate:.3f}x")


if __name__ == "__main__":
    main()
