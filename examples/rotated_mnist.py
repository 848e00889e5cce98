"""Rotated-MNIST data efficiency (SPEC 7, the paper's figure 11): VAE, AugVAE, InvVAE, StdAugVAE.

    python examples/rotated_mnist.py --data ../shared/data/mnist10k.npz --budget quick --out runs/rm_quick
    python examples/rotated_mnist.py --data ../shared/data/mnist10k.npz --out runs/rm_full      # full protocol
    python examples/rotated_mnist.py --mnist-dir data/mnist --out runs/rm_paper   # the paper's sizes, 60k files

``--data`` is an ``.npz`` (``images``, ``labels``; e.g. the 10k-digit file, which is sorted by label
and is shuffled before splitting) or a directory with the four MNIST IDX files (then the official
test split is the test set). ``--mnist-dir DIR`` is the one flag for the paper's protocol: the
60k/10k IDX files in DIR, training sizes 12.5k/25k/37.5k/50k, 10k validation, the 10k test split.

``--budget`` picks a preset (``quick``: under 30 minutes on a 2-core CPU; ``full``: the issue-10
protocol on the 10k pool; ``paper``); any flag given overrides the preset. Writes
``results.json``, ``table.md`` and ``iwlb_vs_size.png``; rerunning the same command with the same
``--out`` skips finished cells (an interrupted run resumes). docs/results.md (section 5) gives the
commands that were run and their wall times.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from sgm_pyro.data import load_mnist, load_npz
from sgm_pyro.experiments.rotated_mnist import BUDGETS, MODELS, budget_config, merge_results, run_rotated_mnist


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


# flag -> (config field, type); every default is None: "keep the budget's value".
_FIELDS = {
    "thetas": _floats, "sizes": _ints, "seeds": _ints, "group": str, "n_test": int, "n_val": int,
    "inference_steps": int, "prior_steps": int, "num_draws": int, "sgm_batch_size": int, "inference_hidden": _ints,
    "inference_input_size": int, "prior_transforms": int, "sigma": str, "max_epochs": int, "patience": int,
    "val_metric": str, "vae_steps": int, "batch_size": int, "lr": float, "channels": _ints, "hidden": int,
    "num_samples": int, "chunk_size": int,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help=".npz file or directory of MNIST IDX files")
    p.add_argument("--mnist-dir", help="directory of the four full MNIST IDX files: run the paper's protocol")
    p.add_argument("--budget", choices=sorted(BUDGETS), default=None,
                   help="preset (default full; paper with --mnist-dir); flags below override it")
    p.add_argument("--merge", nargs="+", metavar="RUN_DIR",
                   help="instead of running: join these runs' results.json (e.g. one process per θ) into --out")
    p.add_argument("--out", default="runs/rotated_mnist")
    p.add_argument("--models", default=None, help=f"subset of {','.join(MODELS)}")
    for name, kind in _FIELDS.items():
        flag = "--" + name.replace("_", "-")
        extra = {"choices": ("reference", "calibrated")} if name == "sigma" else {}
        p.add_argument(flag, type=kind, default=None, **extra)
    p.add_argument("-K", dest="num_samples", type=int, default=None, help="IWLB particles (300 in the paper)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a = p.parse_args(argv)

    if a.merge:
        merge_results(a.merge, a.out)
        print((Path(a.out) / "table.md").read_text())
        return 0
    if bool(a.data) == bool(a.mnist_dir):
        p.error("give exactly one of --data and --mnist-dir (unless --merge is given)")
    if a.threads:
        torch.set_num_threads(a.threads)
    path = Path(a.data or a.mnist_dir)
    test_images = None
    if path.is_dir():
        images, labels = load_mnist(path, "train")
        test_images, _ = load_mnist(path, "test")
    else:
        images, labels = load_npz(path)
    overrides = {name: getattr(a, name) for name in _FIELDS if getattr(a, name) is not None}
    if a.models:
        overrides["models"] = tuple(a.models.split(","))
    cfg = budget_config(a.budget or ("paper" if a.mnist_dir else "full"), **overrides)
    t0 = time.time()
    record = run_rotated_mnist(images, labels, a.out, cfg, test_images=test_images, device=a.device,
                               progress=a.progress, log=lambda s: print(s, flush=True))
    print((Path(a.out) / "table.md").read_text())
    print(f"wall time {time.time() - t0:.0f} s this session ({record['wall_s']:.0f} s over all sessions); "
          f"{len(record['rows'])} rows in {Path(a.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
