"""Figures and the markdown table of the symmetry-recovery benchmark."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from ..groups import Group
from .figures import finish, new_figure

_TRUE, _POSE, _PRIOR = "0.6", "tab:blue", "tab:orange"


def recovery_figure(group: Group, aligned: Mapping[str, Mapping], scores: Mapping[str, Mapping], *,
                    title: str | None = None, bins: int = 60, path=None) -> Figure:
    """True against learned η, one row per class and one column per coordinate.

    ``aligned`` and ``scores`` are the two results of :func:`~sgm_pyro.analysis.recovery_scores`:
    grey the true poses, blue the aligned learned poses of the data, orange the aligned samples of
    ``p(η | x̂)``; rotations in degrees on ``[-180, 180)``, each panel titled with its two W1s.
    """
    classes = list(aligned)
    names = group.names
    fig = new_figure(max(2.2 * len(names), 4.0), 2.0 * max(len(classes), 1))
    axes = fig.subplots(max(len(classes), 1), len(names), squeeze=False)
    for r, cname in enumerate(classes):
        for c, name in enumerate(names):
            ax = axes[r, c]
            series = {k: aligned[cname][k] for k in ("true", "pose", "prior") if aligned[cname][k] is not None}
            vals = {k: v[:, c].numpy() for k, v in series.items()}
            if name == "rot":
                vals = {k: np.degrees(np.mod(v + math.pi, 2 * math.pi) - math.pi) for k, v in vals.items()}
                edges = np.linspace(-180, 180, bins + 1)
            else:
                lo = min(v.min() for v in vals.values())
                hi = max(v.max() for v in vals.values())
                pad = 0.05 * (hi - lo) + 1e-3
                edges = np.linspace(lo - pad, hi + pad, bins + 1)
            ax.hist(vals["true"], bins=edges, density=True, color=_TRUE, label="true")
            for key, colour in (("pose", _POSE), ("prior", _PRIOR)):
                if key in vals:
                    ax.hist(vals[key], bins=edges, density=True, histtype="step", color=colour, lw=1.2,
                            label="learned poses" if key == "pose" else "p(η | x̂)")
            w = scores[cname]
            parts = [f"{w[k][name]['w1']:.3g}" for k in ("pose", "prior") if k in w]
            unit = "°" if name == "rot" else ""
            ax.set_title(f"{cname} {name}\nW1 {' / '.join(parts)}{unit}", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
    axes[0, 0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return finish(fig, path)


def recovery_table(results: Mapping[str, Mapping]) -> str:
    """Markdown table of :func:`~sgm_pyro.experiments.recovery.run_benchmark` results, one row per class.

    Columns: rotation W1 (degrees) of the learned poses and of ``p(η | x̂)``, the largest W1 of the
    other coordinates as a fraction of their box width, hue W1, the same three between two independent
    samples of the truth (the metric's noise floor, ``truth_floor``), modes of ``p(η | x̂)`` found (and of
    the truth) where a goal counts them, the fit time, and the goals met.
    """
    lines = ["| task | class | rot W1 pose / prior (°) | other coords max W1/range pose / prior | "
             "hue W1 pose / prior | truth floor rot / other / hue | modes prior (true) | fit (min) | goals met |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for task, res in results.items():
        goals = res["goals"]
        for cname, s in res["scores"].items():
            def cell(fn) -> str:
                vals = [fn(s[k]) for k in ("pose", "prior") if k in s]
                return " / ".join("–" if v is None else f"{v:.3g}" for v in vals)

            rot = cell(lambda d: d["rot"]["w1"] if "rot" in d else None)
            other = cell(lambda d: max((v["fraction"] for c, v in d.items() if c not in ("rot", "hue")), default=None))
            hue = cell(lambda d: d["hue"]["w1"] if "hue" in d else None)
            mine = [g for k, g in goals.items() if k.startswith(f"{cname} ")]
            # Modes only where the goal counts them: a uniform law has no meaningful mode count.
            counted = f"{cname} prior modes" in goals
            modes = f"{len(s['modes']['prior'])} ({len(s['modes']['true'])})" if counted else "–"
            met = f"{sum(g['met'] for g in mine)}/{len(mine)}"
            f = res.get("floor", {}).get(cname)
            floor = cell(lambda d: None) if f is None else " / ".join(
                "–" if v is None else f"{v:.3g}" for v in (
                    f["rot"]["w1"] if "rot" in f else None,
                    max((v["fraction"] for c, v in f.items() if c not in ("rot", "hue")), default=None),
                    f["hue"]["w1"] if "hue" in f else None))
            lines.append(f"| {task} | {cname} | {rot} | {other} | {hue} | {floor} | {modes} | "
                         f"{res['fit_seconds'] / 60:.1f} | {met} |")
    return "\n".join(lines) + "\n"
