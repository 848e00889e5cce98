"""``sgm experiment rotated-mnist``: the data-efficiency protocol of the paper (SPEC 7)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import DATA_HELP, UsageError, add_out_device, device

_OPTIONS = ("thetas", "sizes", "seeds", "models", "group", "n_test", "n_val", "inference_steps", "prior_steps",
            "vae_steps", "num_samples", "batch_size", "sgm_batch_size")


def run(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..config import DataConfig
    from ..experiments.run_data import load_pool

    try:
        from ..experiments.rotated_mnist import RotatedMnistConfig, run_rotated_mnist
    except ImportError as e:
        raise UsageError(f"the rotated-MNIST experiment is not available in this installation ({e})") from e
    names = {f.name for f in fields(RotatedMnistConfig)}
    over = {}
    for name in _OPTIONS:
        value = getattr(args, name, None)
        if value is not None and name in names:
            over[name] = tuple(value) if isinstance(value, list) else value
    cfg = RotatedMnistConfig(**over)
    images, labels = load_pool(DataConfig(name=args.data))
    dev = device("", args.device)
    out = Path(args.out or "runs/rotated-mnist")
    run_rotated_mnist(images, labels, out, cfg, device=dev, progress=not args.no_progress)
    print(f"sgm experiment rotated-mnist: wrote results.json and table.md to {out}")
    return 0


def register(sub) -> None:
    ex = sub.add_parser("experiment", help="run a paper experiment (rotated-mnist)",
                        description="Run a protocol of the paper. rotated-mnist: data efficiency of VAE, AugVAE, "
                                    "InvVAE and StdAugVAE on rotated MNIST (SPEC 7); writes results.json, table.md "
                                    "and IWLB figures. Unset options keep RotatedMnistConfig's defaults.")
    ex.add_argument("name", choices=("rotated-mnist",), help="which experiment")
    add_out_device(ex, "output folder (default runs/rotated-mnist)")
    ex.add_argument("--data", default="mnist", help=DATA_HELP + " (default mnist, i.e. data/mnist)")
    ex.add_argument("--thetas", type=float, nargs="+", default=None, help="rotation ranges θ in degrees, e.g. 15 90 180")
    ex.add_argument("--sizes", type=int, nargs="+", default=None, help="training-set sizes")
    ex.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds, one run each")
    ex.add_argument("--models", nargs="+", default=None, help="subset of VAE AugVAE InvVAE StdAugVAE")
    ex.add_argument("--group", choices=("rotation", "affine"), default=None, help="the SGM's group")
    ex.add_argument("--n-test", type=int, default=None, help="test images held out of the pool")
    ex.add_argument("--n-val", type=int, default=None, help="validation images held out of the pool")
    ex.add_argument("--inference-steps", type=int, default=None, help="SGM stage-1 steps")
    ex.add_argument("--prior-steps", type=int, default=None, help="SGM stage-2 steps")
    ex.add_argument("--vae-steps", type=int, default=None, help="steps of each VAE")
    ex.add_argument("--batch-size", type=int, default=None, help="VAE batch size")
    ex.add_argument("--sgm-batch-size", type=int, default=None, help="SGM batch size")
    ex.add_argument("--num-samples", type=int, default=None, help="IWLB particles K (300 in the paper)")
    ex.set_defaults(func=run)
