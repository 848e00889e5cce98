"""``sgm sample``: natural augmentations (resamples) of a run's test images."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_run_reader, load_run, load_test_images


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import resample_grid
    from ..validation import check_positive_int

    check_positive_int(args.num_images, "--num-images")
    check_positive_int(args.num_samples, "--num-samples")
    run_, cfg, model, dev = load_run(args)
    out = Path(args.out) if args.out else run_
    x = load_test_images(cfg, dev).test[: args.num_images].to(dev)
    torch.manual_seed(args.seed if args.seed is not None else cfg.seed)
    resamples = model.resample(x, args.num_samples)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"images": x.cpu(), "prototypes": model.prototype(x).cpu(), "resamples": resamples.cpu()},
               out / "samples.pt")
    resample_grid(x.cpu(), resamples.cpu(), max_images=args.num_images, title="images (left) and resamples",
                  path=out / "samples.png")
    print(f"sgm sample: {tuple(resamples.shape)} resamples -> {out / 'samples.pt'}, {out / 'samples.png'}")
    return 0


def register(sub) -> None:
    sa = add_run_reader(sub, "sample", "draw natural augmentations (resamples) of test images",
                        "Resample the first --num-images test images (η ~ q(η|x), η' ~ p(η|x̂), one warp each) and "
                        "write samples.pt ({'images', 'prototypes', 'resamples' (S, N, C, H, W)}) and samples.png.")
    sa.add_argument("--num-images", type=int, default=8, help="test images to resample (default 8)")
    sa.add_argument("--num-samples", type=int, default=8, help="resamples per image (default 8)")
    sa.add_argument("--seed", type=int, default=None, help="random seed of the draws (default: the run's seed)")
    sa.set_defaults(func=run)
