"""Diagnostic of the colour task's scale (docs/recovery.md, "What the colour task needed").

Fits ``color-affine`` with every colour law a point mass (same group, box and settings), then
prints its goals and, per shape, the slope of the learned pose on the true one for each affine
coordinate: 1 is a prototype that keeps none of the coordinate's variation, 0 one that keeps all.

    python benchmarks/recovery_fixed_colour.py --out runs/ca_fixedcolour
    python benchmarks/recovery_fixed_colour.py --slopes-only runs/recovery_final3/color-affine.pt
    python benchmarks/recovery_fixed_colour.py --affine-bound 0.5 --out runs/ca_fixedcolour_box05
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch

from sgm_pyro import SGM
from sgm_pyro.groups import AffineGroup, ColorGroup, ProductGroup
from sgm_pyro.data.recovery import tasks
from sgm_pyro.experiments import recovery

COLOUR = ("hue", "log_sat", "log_val")


def fixed_colour_task(affine_bound: float | None = None) -> tasks.RecoveryTask:
    """``color-affine`` without colour changes; ``affine_bound`` widens the box of tx, ty and the log-scales."""
    classes = tuple(dataclasses.replace(c, laws={k: v for k, v in c.laws.items() if k not in COLOUR})
                    for c in tasks.COLOR_AFFINE.classes)
    task = dataclasses.replace(tasks.COLOR_AFFINE, name="color-affine-fixed", classes=classes)
    if affine_bound is None:
        return task

    def group() -> ProductGroup:
        b = affine_bound
        return ProductGroup(ColorGroup(bounds=tasks.GALAXY_COLOR_BOX, offset=tasks.GALAXY_COLOR_OFFSET, squash=True),
                            AffineGroup(bounds=(b, b, math.pi, b, b), squash=True))

    return dataclasses.replace(task, name=f"color-affine-fixed-box{affine_bound:g}", make_group=group)


@torch.no_grad()
def slopes(model: SGM, task: tasks.RecoveryTask, n: int = 1024, seed: int = recovery.TEST_SEED) -> dict:
    """Least-squares slope of learned on true η per shape and affine coordinate (rotation excluded)."""
    data = task.generate(n, seed)
    eta = model.eval().infer_eta(data.images)
    out = {}
    for k, name in enumerate(task.class_names):
        rows = data.labels == k
        out[name] = {}
        for j, coord in enumerate(model.group.names):
            if coord in ("rot",) + COLOUR:
                continue
            a = torch.stack([data.eta[rows, j], torch.ones(int(rows.sum()))], 1)
            out[name][coord] = float(torch.linalg.lstsq(a, eta[rows, j:j + 1]).solution[0, 0])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ca_fixedcolour")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slopes-only", metavar="MODEL", help="only print the slopes of a saved color-affine model")
    p.add_argument("--affine-bound", type=float, default=None,
                   help="give the model a wider box for tx, ty and the log-scales (the task's is 0.25)")
    args = p.parse_args()
    if args.slopes_only:
        model, task = SGM.load(args.slopes_only), tasks.COLOR_AFFINE
    else:
        task = fixed_colour_task(args.affine_bound)
        # run_task looks the task, its settings and goals up by name
        tasks.TASKS[task.name] = task
        recovery.SETTINGS[task.name] = recovery.SETTINGS["color-affine"]
        recovery.GOALS[task.name] = {"fraction": recovery.GOALS["color-affine"]["fraction"]}
        result = recovery.run_task(task.name, args.out, seed=args.seed)
        for goal, v in result["goals"].items():
            print(("met   " if v["met"] else "missed"), goal, f"{v['value']:.4f} (limit {v['limit']})")
        model = SGM.load(f"{args.out}/{task.name}.pt")
    for name, row in slopes(model, task).items():
        print(name, ", ".join(f"{c} {s:.2f}" for c, s in row.items()))


if __name__ == "__main__":
    main()
