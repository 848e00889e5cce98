"""``sgm evaluate``: score a fitted run on held-out images, printing each number with its scale."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .common import METRICS, add_run_reader, load_run, load_test_images, update_metrics

# What each printed number means, and what a good value is.
INVARIANCE_SCALE = "0 = perfectly invariant prototypes, about 2 = as different as two unrelated images"
RECOVERY_SCALE = "worst per-shape Wasserstein-1 / range of position and size; goal <= 0.05"
HEART_SCALE = "circular std of the hearts' learned rotation; goal <= 3°, hearts are never rotated in the data"


def uniform_log_prob(group) -> float:
    """log density of the uniform distribution on the group's box ``offset ± bounds``: a baseline for log p(η|x̂)."""
    return -sum(math.log(2.0 * b) for b in group.bounds.tolist())


def _generic_metrics(args, cfg, model, data, dev, out: Path) -> dict:
    """Invariance, held-out log p(η|x̂) and figures for a data set without known latents."""
    import torch

    from ..analysis import invariance_metrics, prototype_grid, resample_grid
    from ..inference.stage2 import validation_log_prob

    x = data.test.to(dev)
    with torch.no_grad():
        eta = torch.cat([model.infer_eta(c) for c in x.split(args.batch_size)])
        x_hat = torch.cat([model.prototype(c) for c in x.split(args.batch_size)])
        lp_pose = model.log_prob_eta(eta, x_hat)
        with model.param_scope(), torch.random.fork_rng():
            held_out = validation_log_prob(model.prior, model.inference, x, cfg.prior, seed=cfg.seed)
    labels = data.test_labels if data.test_labels is not None else torch.zeros(x.shape[0], dtype=torch.long)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    inv = invariance_metrics(model, x, labels, scale=0.5, generator=gen, batch_size=args.batch_size, class_names=())
    pick = slice(0, 16)
    prototype_grid(x[pick].cpu(), x_hat[pick].cpu(), None if data.test_labels is None else labels[pick],
                   title="test images (top) and their prototypes (bottom)", path=out / "prototypes.png")
    resample_grid(x[:8].cpu(), model.resample(x[:8], args.num_resamples).cpu(),
                  title="test images (left) and resamples", path=out / "resamples.png")
    return {"n_test": x.shape[0], "heldout_log_prob_eta": held_out, "log_prob_eta_at_pose": lp_pose.mean().item(),
            "uniform_log_prob_eta": uniform_log_prob(model.group), "invariance": inv}


def summary(metrics: dict) -> list[str]:
    """One line per headline number, each with what a good value is."""
    lines = [f"  invariance error       {metrics['invariance']['invariance_error']:10.4f}   ({INVARIANCE_SCALE})"]
    if "heldout_log_prob_eta" in metrics:
        uniform = metrics["uniform_log_prob_eta"]
        held_out = metrics["heldout_log_prob_eta"]
        lines.append(f"  held-out log p(η|x̂)    {held_out:10.3f}   (nats per image, higher is better; a uniform "
                     f"density on the box scores {uniform:.3f})")
        lines.append(f"  log p(f(x)|x̂) at pose  {metrics['log_prob_eta_at_pose']:10.3f}   (the same density at the "
                     f"inferred pose; uniform: {uniform:.3f})")
    worst = metrics.get("recovery", {}).get("max_relative")
    if worst is not None:
        lines.append(f"  recovery (worst)       {worst:10.3f}   ({RECOVERY_SCALE})")
    spread = metrics.get("hearts", {}).get("rotation_std_deg_mean")
    if spread is not None:
        lines.append(f"  heart rotation spread  {spread:9.2f}°   ({HEART_SCALE})")
    return lines


def run(args: argparse.Namespace) -> int:
    import torch

    run_, cfg, model, dev = load_run(args)
    out = Path(args.out) if args.out else run_
    data = load_test_images(cfg, dev)
    torch.manual_seed(cfg.seed)
    if cfg.data.name == "dsprites":
        from ..experiments.dsprites_report import dsprites_report
        metrics = dsprites_report(model, data.test.to(dev), {k: v.to(dev) for k, v in data.test_latents.items()},
                                  out, num_resamples=args.num_resamples, seed=cfg.seed,
                                  title=f"sgm evaluate {run_}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        metrics = _generic_metrics(args, cfg, model, data, dev, out)
    metrics["data"] = cfg.data.name
    out.mkdir(parents=True, exist_ok=True)
    update_metrics(out, "evaluate", metrics)
    print("\n".join([f"sgm evaluate: {run_} on {data.test.shape[0]} test images of {cfg.data.name}",
                     *summary(metrics), f"wrote {out / METRICS}"]))
    return 0


def register(sub) -> None:
    ev = add_run_reader(sub, "evaluate", "score a fitted run on held-out images; writes metrics.json and figures",
                        "Load DIR/model.pt and measure on the test images: the invariance error of the prototypes "
                        "(‖x̂(x) − x̂(T_g x)‖² / Var(x), g uniform on half the box; 0 is perfectly invariant, about "
                        "2 is as different as unrelated images), the held-out log p(η|x̂') of stage 2 and "
                        "log p(f(x)|x̂(x)) (next to the log density of a uniform on the box); dSprites runs get the "
                        "full symmetry-recovery report. Results go under 'evaluate' in metrics.json.")
    ev.add_argument("--num-resamples", type=int, default=4, help="resamples per test image for figures and metrics")
    ev.add_argument("--batch-size", type=int, default=256, help="images per forward pass (memory only)")
    ev.set_defaults(func=run)
