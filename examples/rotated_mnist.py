"""Rotated-MNIST data efficiency (SPEC 7, the paper's figure 11): VAE, AugVAE, InvVAE, StdAugVAE.

    python examples/rotated_mnist.py --data /work/shared/data/mnist10k.npz --out runs/rotated_mnist

``--data`` is an ``.npz`` (``images``, ``labels``; e.g. the 10k-digit file, which is sorted by label
and is shuffled before splitting) or a directory with the four MNIST IDX files (then the official
test split is the test set). Writes ``results.json``, ``table.md`` and ``iwlb_theta<θ>.png``. The
defaults are the full protocol on the 10k pool (hours on a CPU); docs/results.md (section 5) gives the
scaled-down command that was run on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from sgm_pyro.data import load_mnist, load_npz
from sgm_pyro.experiments.rotated_mnist import MODELS, RotatedMnistConfig, merge_results, run_rotated_mnist


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def main(argv: list[str] | None = None) -> int:
    d = RotatedMnistConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help=".npz file or directory of MNIST IDX files")
    p.add_argument("--merge", nargs="+", metavar="RUN_DIR",
                   help="instead of running: join these runs' results.json (e.g. one process per θ) into --out")
    p.add_argument("--out", default="runs/rotated_mnist")
    p.add_argument("--thetas", type=_floats, default=d.thetas, help="comma-separated degrees, e.g. 15,90,180")
    p.add_argument("--sizes", type=_ints, default=d.sizes, help="comma-separated training sizes")
    p.add_argument("--seeds", type=_ints, default=d.seeds)
    p.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    p.add_argument("--group", choices=("rotation", "affine"), default=d.group)
    p.add_argument("--n-test", type=int, default=d.n_test)
    p.add_argument("--n-val", type=int, default=d.n_val)
    p.add_argument("--inference-steps", type=int, default=d.inference_steps)
    p.add_argument("--prior-steps", type=int, default=d.prior_steps)
    p.add_argument("--num-draws", type=int, default=d.num_draws)
    p.add_argument("--sgm-batch-size", type=int, default=d.sgm_batch_size)
    p.add_argument("--inference-hidden", type=_ints, default=d.inference_hidden)
    p.add_argument("--inference-input-size", type=int, default=None)
    p.add_argument("--prior-transforms", type=int, default=d.prior_transforms)
    p.add_argument("--vae-steps", type=int, default=d.vae_steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="VAE learning rate")
    p.add_argument("--channels", type=_ints, default=d.channels)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--num-samples", "-K", type=int, default=d.num_samples, help="IWLB particles (300 in the paper)")
    p.add_argument("--chunk-size", type=int, default=d.chunk_size)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a = p.parse_args(argv)

    if a.merge:
        merge_results(a.merge, a.out)
        print((Path(a.out) / "table.md").read_text())
        return 0
    if not a.data:
        p.error("--data is required unless --merge is given")
    if a.threads:
        torch.set_num_threads(a.threads)
    path = Path(a.data)
    test_images = None
    if path.is_dir():
        images, labels = load_mnist(path, "train")
        test_images, _ = load_mnist(path, "test")
    else:
        images, labels = load_npz(path)
    cfg = RotatedMnistConfig(
        thetas=a.thetas, sizes=a.sizes, seeds=a.seeds, models=tuple(a.models.split(",")), group=a.group,
        n_test=a.n_test, n_val=a.n_val, inference_steps=a.inference_steps, prior_steps=a.prior_steps,
        num_draws=a.num_draws, sgm_batch_size=a.sgm_batch_size, inference_hidden=a.inference_hidden,
        inference_input_size=a.inference_input_size, prior_transforms=a.prior_transforms,
        vae_steps=a.vae_steps, batch_size=a.batch_size, lr=a.lr, channels=a.channels, hidden=a.hidden,
        num_samples=a.num_samples, chunk_size=a.chunk_size)
    t0 = time.time()
    record = run_rotated_mnist(images, labels, a.out, cfg, test_images=test_images, device=a.device,
                               progress=a.progress, log=lambda s: print(s, flush=True))
    print((Path(a.out) / "table.md").read_text())
    print(f"wall time {time.time() - t0:.0f} s; {len(record['rows'])} rows in {Path(a.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
