"""How a colour-task pose network answers a pure change of size (docs/recovery.md, "Size or brightness").

For a saved model, or after fitting stage 1 alone with settings overrides, prints per shape:

* the within-image slope of the predicted log-scale (and log-value) on views of one test image
  scaled by ``e^r``, ``r`` in ±0.1 (1 and 0 for an equivariant network);
* over the test images, the correlation of the isotropic learned log-scale with the true
  log-scale and with the true log-value, and the std of the learned anisotropy
  ``log_sx − log_sy`` with its correlation to ``cos 2θ`` of the true orientation.

    python benchmarks/recovery_scale_response.py --model runs/recovery_final4/color-affine.pt
    python benchmarks/recovery_scale_response.py --fit '{"colour_head": "mlp"}' --out runs/s1_mlp.pt
    python benchmarks/recovery_scale_response.py --fit '{}' --classes heart --affine-only --out runs/s1_h.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from sgm_pyro import SGM
from sgm_pyro.data.recovery import tasks
from sgm_pyro.experiments import recovery
from sgm_pyro.groups import AffineGroup

COLOUR = ("hue", "log_sat", "log_val")


def variant(classes: list[str] | None, fixed_colour: bool, affine_only: bool) -> tasks.RecoveryTask:
    """``color-affine`` restricted to ``classes``, without colour laws, or with the affine group alone."""
    task = tasks.COLOR_AFFINE
    if classes:
        task = dataclasses.replace(task, classes=tuple(c for c in task.classes if c.name in classes))
    if fixed_colour or affine_only:
        task = dataclasses.replace(task, classes=tuple(
            dataclasses.replace(c, laws={k: v for k, v in c.laws.items() if k not in COLOUR}) for c in task.classes))
    if affine_only:
        task = dataclasses.replace(task, make_group=lambda: AffineGroup(bounds=tasks.GALAXY_AFFINE_BOX, squash=True))
    return task


def fit_stage1(task: tasks.RecoveryTask, overrides: dict, seed: int = 0) -> SGM:
    """Stage 1 of the colour task's settings with ``overrides`` (any RecoverySettings field)."""
    s = dataclasses.replace(recovery.SETTINGS["color-affine"], **overrides)
    torch.manual_seed(seed)
    model = recovery.build_model(task, s)
    train, val = task.generate(s.n_train, seed + 1), task.generate(s.n_val, seed + 10_000)
    stage1, _ = recovery.stage_kwargs(task, s)
    start = time.perf_counter()
    model.fit(train.images, inference_steps=s.inference_steps, prior_steps=0, batch_size=s.batch_size,
              val_images=val.images, seed=seed, progress=False, **stage1)
    print(f"stage 1: {time.perf_counter() - start:.0f} s")
    return model


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


@torch.no_grad()
def report(model: SGM, task: tasks.RecoveryTask, n: int = 1024, seed: int = recovery.TEST_SEED) -> None:
    g, inf = model.group, model.inference.eval()
    names = g.names
    data = task.generate(n, seed)
    eta = inf.mode(data.images)
    sx, sy = names.index("log_sx"), names.index("log_sy")
    rs = torch.linspace(-0.1, 0.1, 9)
    design = torch.stack([rs, torch.ones_like(rs)], 1)
    for k, cname in enumerate(task.class_names):
        rows = data.labels == k
        slopes = {"log_sx": [], "log_val": []}
        for x in data.images[rows][:16]:
            views = torch.zeros(len(rs), g.dim)
            views[:, sx] = views[:, sy] = rs
            pose = inf.mode(g.apply(x[None].expand(len(rs), -1, -1, -1), views))
            for c in slopes:
                if c in names:
                    fit = torch.linalg.lstsq(design, pose[:, names.index(c), None]).solution
                    slopes[c].append(float(fit[0, 0]))
        line = [f"{cname}: within-image slope log-scale {sum(slopes['log_sx']) / len(slopes['log_sx']):.2f}"]
        if slopes["log_val"]:
            line.append(f"log-value {sum(slopes['log_val']) / len(slopes['log_val']):.2f}")
        iso = (eta[rows, sx] + eta[rows, sy]) / 2
        line.append(f"| corr(iso, true log-scale) {corr(iso, data.eta[rows, sx]):.2f}")
        if "log_val" in names:
            line.append(f"corr(iso, true log-value) {corr(iso, data.eta[rows, names.index('log_val')]):.2f}")
        aniso = eta[rows, sx] - eta[rows, sy]
        theta = data.eta[rows, names.index("rot")]
        line.append(f"| anisotropy std {float(aniso.std()):.3f}")
        if float(theta.std()) > 1e-6:
            line.append(f"corr(anisotropy, cos 2θ) {corr(aniso, torch.cos(2 * theta)):.2f}")
        print(" ".join(line))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a saved color-affine model to analyse")
    p.add_argument("--fit", metavar="JSON", help="fit stage 1 with these RecoverySettings overrides")
    p.add_argument("--classes", nargs="*", default=None, help="keep only these shapes")
    p.add_argument("--fixed-colour", action="store_true", help="every colour law a point mass")
    p.add_argument("--affine-only", action="store_true", help="the affine group alone (no colour coordinates)")
    p.add_argument("--out", help="where to save the stage-1 model of --fit")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = variant(args.classes, args.fixed_colour, args.affine_only)
    if (args.model is None) == (args.fit is None):
        p.error("give exactly one of --model and --fit")
    model = SGM.load(args.model) if args.model else fit_stage1(task, json.loads(args.fit))
    if args.out and args.fit:
        model.save(args.out)
    report(model, task)


if __name__ == "__main__":
    main()
