"""Stage-1 invariance on fully rotated MNIST: held-out x-MSE against steps and wall-clock seconds.

    python examples/rotated_mnist_invariance.py --data ../shared/data/mnist10k.npz --steps 300 \
        --batch-size 128 --out runs/rmnist_inv

Long runs take ``--checkpoint FILE``: saved atomically every ``--val-every`` steps, resumed when it exists.

Each digit of the 10k pool is rotated once by U(−180°, 180°); 9,000 train, 1,000 held out. The
MNIST box of SPEC 2.4 (unsquashed). The held-out figure is the SPEC 3 x-MSE in network mode with
two fixed random views (``validation_mse``), the number the reference JAX code reports. Variants
compare pose heads (``--rotation-head circle|equivariant|real``) and networks at the same budget.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import sgm_pyro
from sgm_pyro.checkpoint import save_atomic
from sgm_pyro.data import load_npz, rotate_fixed, split_indices
from sgm_pyro.inference import InferenceConfig, fit_inference
from sgm_pyro.inference.stage1 import validation_mse

MNIST_BOUNDS = (0.25, 0.25, math.pi, 0.25, 0.25)


def rotated_pool(path: str, seed: int = 0, max_degrees: float = 180.0):
    images, labels = load_npz(path)
    rotated, angles = rotate_fixed(images, max_degrees, seed=seed)
    train, held = split_indices(len(images), [9000, 1000], seed=seed)
    return rotated[train], rotated[held], labels[train], labels[held]


def run(args) -> dict:
    torch.manual_seed(args.seed)
    train, held, _, _ = rotated_pool(args.data, args.seed)
    group = sgm_pyro.AffineGroup(bounds=MNIST_BOUNDS)
    kwargs = dict(rotation_head=args.rotation_head, net=args.net)
    if args.hidden:
        kwargs["hidden"] = tuple(args.hidden)
    if args.input_size:
        kwargs["input_size"] = args.input_size
    inference = sgm_pyro.PrototypeInference(group, (1, 28, 28), **kwargs)
    cfg = InferenceConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, val_every=args.val_every,
                          val_size=1000, warmup_fraction=args.warmup_fraction, blur_fraction=args.blur_fraction,
                          num_draws=args.num_draws, upright_weight=args.upright_weight,
                          upright_concentrated_weight=args.upright_concentrated_weight)
    state, earlier = None, 0.0
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is not None and ckpt.exists():  # resume: the network, the optimiser, the batches, the RNG and the clock
        saved = torch.load(ckpt, weights_only=False)
        inference.load_state_dict(saved["model"])
        state, earlier = saved["state"], saved["seconds"]
        print(f"resuming from {ckpt} at step {state['step']}")
    start = time.perf_counter()

    def on_checkpoint(snapshot: dict) -> None:
        save_atomic({"model": inference.state_dict(), "state": snapshot,
                     "seconds": earlier + time.perf_counter() - start}, ckpt)

    hist = fit_inference(inference, train, cfg, val_images=held, seed=args.seed, progress=not args.no_progress,
                         state=state, on_checkpoint=on_checkpoint if ckpt else None,
                         checkpoint_every=args.val_every if ckpt else 0)
    seconds = earlier + time.perf_counter() - start
    final = validation_mse(inference, held, cfg.loss())
    # validation runs are a small share of the time; seconds are apportioned by step
    curve = [{"step": s, "seconds": seconds * s / cfg.steps, "val_mse": v}
             for s, v in zip(hist["val_step"], hist["val_mse"])]
    return {"args": vars(args), "seconds": seconds, "final_val_mse": final, "curve": curve,
            "images_per_second": cfg.steps * cfg.batch_size / seconds,
            # the canonicalisation prior's weight (it follows the poses' concentration), mean per 50 steps
            "upright_weight": block_means(hist["upright_weight"], 50)}


def block_means(values: list[float], block: int) -> list[float]:
    return [sum(values[i:i + block]) / len(values[i:i + block]) for i in range(0, len(values), block)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/mnist10k.npz")
    p.add_argument("--out", default="runs/rmnist_inv")
    p.add_argument("--name", default=None, help="file name of this variant's JSON (default from the flags)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-fraction", type=float, default=0.05)
    p.add_argument("--blur-fraction", type=float, default=0.01)
    p.add_argument("--num-draws", type=int, default=5)
    p.add_argument("--rotation-head", default="equivariant", choices=("circle", "equivariant", "real"))
    p.add_argument("--upright-weight", type=float, default=None,
                   help="InferenceConfig.upright_weight (default: the library default for the head)")
    p.add_argument("--upright-concentrated-weight", type=float, default=None,
                   help="InferenceConfig.upright_concentrated_weight")
    p.add_argument("--net", default="mlp", choices=("mlp", "cnn"))
    p.add_argument("--hidden", type=int, nargs="*", default=None)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None,
                   help="file for an atomic checkpoint every --val-every steps; an existing one is resumed")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"{args.net}_{args.rotation_head}_{args.steps}x{args.batch_size}_lr{args.lr:g}"
    (out / f"{name}.json").write_text(json.dumps(res, indent=2))
    print(f"{name}: held-out x-MSE {res['final_val_mse']:.4f} after {args.steps} steps of {args.batch_size} "
          f"in {res['seconds']:.0f} s ({res['images_per_second']:.0f} images/s)")
    for c in res["curve"]:
        print(f"  step {c['step']:>6}  {c['seconds']:7.1f} s  x-MSE {c['val_mse']:.4f}")
    print(f"figure: {plot_curves(out)}")


def plot_curves(out: Path) -> Path:
    """Held-out x-MSE against steps and against wall-clock seconds, every variant whose JSON is in ``out``.

    Seconds compare only runs made under the same load on one machine (docs/results.md §8).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for f in sorted(out.glob("*.json")):
        curve = json.loads(f.read_text())["curve"]
        mse = [c["val_mse"] for c in curve]
        by_step.plot([c["step"] for c in curve], mse, marker=".", label=f.stem)
        by_time.plot([c["seconds"] for c in curve], mse, marker=".", label=f.stem)
    for ax in (by_step, by_time):
        ax.axhline(0.21, color="gray", ls="--", lw=0.8, label="0.21 (issue 9, 300 steps)")
    by_step.set(xlabel="step", ylabel="held-out invariance x-MSE", title="fully rotated MNIST, stage 1")
    by_time.set(xlabel="wall-clock seconds (this machine, the load of each run)")
    by_time.legend(fontsize=7)
    path = out / "xmse_vs_seconds.png"
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main()
