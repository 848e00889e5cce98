"""Stage 2 with the re-augmented prototype posed by f(x_rnd) (SPEC 4) or by a draw of q: which fits better?

One stage-1 fit (rotated bars, or rotated MNIST digits) is shared; stage 2 is then fitted twice from the same seed,
once per ``PriorConfig.reaugment_pose``. Both priors are scored on held-out digits by
``log p_ψ(η_x | x̂)`` with ``η_x ~ q_ω(· | x)`` and ``x̂ = T_{f(x)}⁻¹(x)`` (the prototype the model
conditions on everywhere else), and by stage 2's own held-out objective under each pairing.

    python benchmarks/reaugment_pose.py                      # synthetic rotated bars, 16x16 (CPU: minutes)
    python benchmarks/reaugment_pose.py --data ../shared/data/mnist10k.npz
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch

import sgm_pyro
from sgm_pyro.data import load_npz, rotate_fixed, split_indices
from sgm_pyro.inference.stage2 import PriorConfig, validation_log_prob


def bars(n: int, seed: int) -> torch.Tensor:
    """Rotated bars of random length and width on a 16x16 -1 background: ``(n, 1, 16, 16)``."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(16.0) - 7.5, torch.arange(16.0) - 7.5, indexing="ij")
    length, width = 2 + 4 * torch.rand(n, 1, 1, generator=g), 0.8 + 1.2 * torch.rand(n, 1, 1, generator=g)
    angle = (2 * torch.rand(n, 1, 1, generator=g) - 1) * math.pi
    along = xx * torch.cos(angle) + yy * torch.sin(angle)
    across = -xx * torch.sin(angle) + yy * torch.cos(angle)
    bar = torch.sigmoid(3 * (length - along.abs())) * torch.sigmoid(3 * (width - across.abs()))
    blob = torch.exp(-((xx - 3 * torch.cos(angle)) ** 2 + (yy - 3 * torch.sin(angle)) ** 2) / 2)  # breaks the 180° symmetry
    return (2 * (bar + blob).clamp(0, 1) - 1)[:, None]


def held_out_log_prob(model, x: torch.Tensor, seed: int = 0) -> float:
    """Mean ``log p_ψ(η_x | T_{f(x)}⁻¹ x)`` with ``η_x ~ q_ω(· | x)`` (fixed seed)."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        eta = model.inference.rsample(x)
        return model.log_prob_eta(eta, model.prototype(x)).mean().item()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="bars", help='"bars" (synthetic, 16x16) or an .npz such as ../shared/data/mnist10k.npz')
    p.add_argument("--degrees", type=float, default=180.0)
    p.add_argument("--train", type=int, default=1024)
    p.add_argument("--test", type=int, default=512)
    p.add_argument("--inference-steps", type=int, default=300)
    p.add_argument("--prior-steps", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    images = None if args.data == "bars" else load_npz(args.data)[0]
    for seed in args.seeds:
        if images is None:
            train, test = bars(args.train, seed), bars(args.test, 1000 + seed)
            nets = dict(inference_kwargs=dict(hidden=(128, 64)), prior_kwargs=dict(feature_hidden=(64,), hidden=(32, 32)))
        else:
            train_idx, test_idx = split_indices(len(images), (args.train, args.test), seed=seed)
            rotated, _ = rotate_fixed(images, args.degrees, seed=seed)
            train, test = rotated[train_idx], rotated[test_idx]
            nets = dict(inference_kwargs=dict(input_size=14, hidden=(256, 128)),
                        prior_kwargs=dict(feature_hidden=(128,), hidden=(64, 64), input_size=14))
        group = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
        torch.manual_seed(seed)
        base = sgm_pyro.SGM(group, train.shape[1:], **nets)
        start = time.perf_counter()
        base.fit(train, inference_steps=args.inference_steps, prior_steps=0, batch_size=64, seed=seed,
                 progress=False, inference_lr=1e-3, inference_blur_fraction=0.05)
        sigma = (base.group.bounds * base.inference.sigma).detach()  # q's spread in η units (radians)
        print(f"seed {seed}: stage 1 in {time.perf_counter() - start:.0f} s, q's σ {sigma.tolist()}", flush=True)
        fitted = {}
        for pose in ("mode", "sample"):
            model = copy.deepcopy(base)
            model.fit(train, inference_steps=0, prior_steps=args.prior_steps, batch_size=64, seed=seed,
                      progress=False, prior_reaugment_pose=pose, val_images=test[:500])
            fitted[pose] = model.eval()
        for pose, model in fitted.items():
            with model.param_scope():
                objective = {p2: validation_log_prob(model.prior, model.inference, test, PriorConfig(reaugment_pose=p2))
                             for p2 in ("mode", "sample")}
            print(f"seed {seed} trained with {pose:6s}: held-out log p(η_x | x̂(x)) {held_out_log_prob(model, test):7.3f}"
                  f"  stage-2 objective on mode pairs {objective['mode']:7.3f}, on sample pairs {objective['sample']:7.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
