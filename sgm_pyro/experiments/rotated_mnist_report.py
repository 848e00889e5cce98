"""Tables, figure and merging of rotated-MNIST results (``results.json`` rows of :mod:`.rotated_mnist`).

A row is one (θ, training size, seed, model) cell: ``{"theta", "size", "seed", "model", "iwlb", "mse",
...}``. The figure draws our IWLB against training size, one panel per θ, with the paper's values
(SPEC 8, read from its figure 11) beside ours on a shared axis of *fraction of the full training set*
(the paper's 12.5k/50k and our 1,750/7,000 are both a quarter and the whole).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

MODELS = ("VAE", "AugVAE", "InvVAE", "StdAugVAE")

# SPEC 8 (paper, figure 11; read off the figure, about ±5 to 15 nats). Keys: fraction of the full
# 50k training set. StdAugVAE is reported at one size only (the full set).
PAPER_IWLB: dict[float, dict[str, dict[float, float]]] = {
    15.0: {"VAE": {0.25: 1015.0, 1.0: 1270.0}, "AugVAE": {0.25: 1255.0, 1.0: 1277.0}, "StdAugVAE": {1.0: 1162.0}},
    90.0: {"VAE": {0.25: 850.0, 1.0: 1124.0}, "AugVAE": {0.25: 1168.0, 1.0: 1168.0}, "StdAugVAE": {1.0: 1062.0}},
    180.0: {"VAE": {0.25: 812.0, 1.0: 1087.0}, "AugVAE": {0.25: 1143.0, 1.0: 1143.0}, "StdAugVAE": {1.0: 1029.0}},
}
_COLOURS = {"VAE": "tab:blue", "AugVAE": "tab:orange", "InvVAE": "tab:green", "StdAugVAE": "tab:red"}


def summarise(rows: list[dict]) -> dict:
    """``{θ: {model: {size: {metric: (mean, stderr over seeds)}}}}``; stderr is 0 with one seed."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["theta"], r["model"], r["size"]), []).append(r)
    table: dict = {}
    for (theta, model, size), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], MODELS.index(kv[0][1]), kv[0][2])):
        cell = {}
        for key in ("iwlb", "mse", "prototype_bound", "best_epoch"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
                cell[key] = (statistics.fmean(vals), se)
        cell["seeds"] = len(rs)
        table.setdefault(theta, {}).setdefault(model, {})[size] = cell
    return table


def markdown_table(table: dict) -> str:
    """Rows (model, training size), one IWLB column per θ, then MSE; ``mean ± s.e. (n seeds)``."""
    thetas = sorted(table)
    keys = sorted({(m, s) for t in thetas for m, row in table[t].items() for s in row},
                  key=lambda k: (MODELS.index(k[0]), k[1]))
    head = "| model | train size | " + " | ".join(f"IWLB θ={t:g}°" for t in thetas) + " | " + \
        " | ".join(f"MSE θ={t:g}°" for t in thetas) + " |"
    lines = [head, "|" + " --- |" * (2 + 2 * len(thetas))]

    def fmt(cell, key, digits):
        if cell is None or key not in cell:
            return "—"
        m, se = cell[key]
        return f"{m:.{digits}f} ± {se:.{digits}f} ({cell['seeds']})"

    for model, size in keys:
        cells = [table[t].get(model, {}).get(size) for t in thetas]
        lines.append(f"| {model} | {size} | " + " | ".join(fmt(c, "iwlb", 1) for c in cells) + " | "
                     + " | ".join(fmt(c, "mse", 4) for c in cells) + " |")
        if model == "InvVAE":
            lines.append(f"| InvVAE prototype-space bound (secondary, not a density of x) | {size} | "
                         + " | ".join(fmt(c, "prototype_bound", 1) for c in cells) + " |" + " |" * len(thetas))
    return "\n".join(lines) + "\n"


def data_efficiency_figure(table: dict, path, *, full_size: int | None = None) -> Path:
    """IWLB against training size, one panel per θ; ours solid with seed s.e. bars, the paper's dashed.

    ``full_size`` is our "whole training set" (default: the largest size in ``table``), so the
    x axis is the fraction of it, the paper's points at fractions of 50k.
    """
    import matplotlib.pyplot as plt  # optional dependency, only for figures

    thetas = sorted(table)
    sizes = sorted({s for t in thetas for row in table[t].values() for s in row})
    full = full_size or max(sizes)
    fig, axes = plt.subplots(1, len(thetas), figsize=(4.2 * len(thetas), 3.6), squeeze=False)
    for ax, theta in zip(axes[0], thetas):
        for model, row in table[theta].items():
            pts = sorted((s / full, *c["iwlb"]) for s, c in row.items() if "iwlb" in c)
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=_COLOURS[model], label=f"{model} (ours)")
            paper = PAPER_IWLB.get(float(theta), {}).get(model)
            if paper:
                px, py = zip(*sorted(paper.items()))
                ax.plot(px, py, ls="--", marker="x", color=_COLOURS[model], alpha=0.6, label=f"{model} (paper)")
        ax.set_title(f"θ = {theta:g}°")
        ax.set_xlabel(f"training size / full set (ours: full = {full}; paper: 50k)")
        ax.set_ylabel("test IWLB (nats)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_results(out: Path, record: dict, figures: bool = False) -> None:
    """``results.json`` (atomically: a crash never leaves half a file), ``table.md``, and the figure."""
    table = summarise(record["rows"])
    record["table"] = {str(t): v for t, v in table.items()}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out / "results.json")
    (out / "table.md").write_text(markdown_table(table))
    if figures and table:
        data_efficiency_figure(table, out / "iwlb_vs_size.png", full_size=max(record["config"]["sizes"]))


def merge_results(dirs, out_dir) -> dict:
    """Join the ``results.json`` of runs split over processes (e.g. one per θ) into ``out_dir``.

    Rows are concatenated (runs must not repeat a (θ, size, seed, model)); the config recorded is the
    first run's with the union of θs, sizes and seeds; table and figure are rewritten.
    """
    records = [json.loads((Path(d) / "results.json").read_text()) for d in dirs]
    if not records:
        raise ValueError("merge_results needs at least one run directory")
    rows = [r for rec in records for r in rec["rows"]]
    keys = [(r["theta"], r["size"], r["seed"], r["model"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("the runs overlap: some (theta, size, seed, model) appears twice")
    conf = dict(records[0]["config"])
    for key in ("thetas", "sizes", "seeds"):
        conf[key] = sorted({v for rec in records for v in rec["config"][key]})
    merged = {**records[0], "config": conf, "rows": rows, "merged_from": [str(d) for d in dirs],
              "wall_s": max(rec.get("wall_s", 0.0) for rec in records)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, merged, figures=True)
    return merged
