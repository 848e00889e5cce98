"""Line figures: the two training stages' curves and IWLB against training-set size."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from .figures import finish, new_figure


def _series(record: Mapping, key: str, step_key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(steps, values)`` of ``record[key]``, or ``None`` if absent or empty.

    Falls back to the index as step when the step list is missing or of another length.
    """
    values = record.get(key) if isinstance(record, Mapping) else None
    if values is None or not hasattr(values, "__len__") or len(values) == 0:
        return None
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    steps = record.get(step_key)
    x = np.asarray(steps, dtype=np.float64).reshape(-1) if steps is not None else None
    if x is None or x.size != y.size:
        x = np.arange(y.size, dtype=np.float64)
    return x, y


# Line styles per series: stage 1's loss is mse + inv_weight·inv, so it often lies exactly on the
# x-MSE curve; a wide solid loss under a dashed x-MSE keeps both visible.
_STYLES = {"loss": dict(ls="-", lw=2.6, alpha=0.55), "x-MSE": dict(ls="--", lw=1.4),
           "invertibility": dict(ls=":", lw=1.6)}
# Markers when there are few points: a large loss disc stays visible around a smaller x-MSE square.
_MARKERS = {"loss": ("o", 9), "x-MSE": ("s", 5), "invertibility": ("^", 5)}
# Up to this many points a curve is drawn with large markers and each value written next to it.
_FEW_POINTS = 5

# (panel title, stage key, [(series key, step key, legend label)], y-axis label)
_PANELS = (
    ("stage 1: training", "inference", [("loss", "step", "loss"), ("mse", "step", "x-MSE"),
                                       ("inv", "step", "invertibility")], "loss"),
    ("stage 1: validation", "inference", [("val_mse", "val_step", "validation x-MSE")], "x-MSE"),
    ("stage 2: training", "prior", [("loss", "step", "loss")], "loss"),
    ("stage 2: validation", "prior", [("val_log_prob", "val_step", "validation log-likelihood")],
     "log p(η | x̂)"),
)


def _plot_series(ax, x: np.ndarray, y: np.ndarray, label: str, *, alone: bool) -> None:
    """One curve; a handful of points (an early validation) gets big markers, and its values
    written next to them when the curve is ``alone`` in its panel (labels of several would collide)."""
    few = y.size <= _FEW_POINTS
    if alone:  # a validation curve, or stage 2's loss: a plain solid line
        style = dict(marker="o", ms=7) if few else dict(marker="o" if y.size < 20 else None, ms=3)
    elif few:
        marker, size = _MARKERS.get(label, ("o", 7))
        style = dict(marker=marker, ms=size, ls=_STYLES.get(label, {}).get("ls", "-"))
    else:
        style = dict(_STYLES.get(label, {}), marker="o" if y.size < 20 else None, ms=3)
    (line,) = ax.plot(x, y, label=label, **style)
    if not (few and alone):
        return
    for xi, yi in zip(x, y):
        ax.annotate(f"{yi:.4g}", (xi, yi), xytext=(0, 7), textcoords="offset points", ha="center",
                    fontsize="small", color=line.get_color())
    note = f"one value so far (step {x[0]:g})"
    if x.size == 1 and note not in [t.get_text() for t in ax.texts]:  # centre a lone point and say so
        ax.set_xlim(x[0] - max(1.0, 0.5 * abs(x[0])), x[0] + max(1.0, 0.5 * abs(x[0])))
        ax.text(0.5, 0.04, note, transform=ax.transAxes, ha="center",
                va="bottom", fontsize="small", color="0.35")
    ax.margins(x=0.12, y=0.25)  # room for the value labels


def training_curves(history: Mapping, *, title: str | None = None, path=None) -> Figure:
    """Stage-1 and stage-2 training curves from ``SGM.history``.

    Args:
        history: ``{"inference": {"step", "loss", "mse", "inv", "val_step", "val_mse"},
            "prior": {"step", "loss", "val_step", "val_log_prob"}}`` (lists); any missing stage or
            key is skipped, and an empty history gives a figure saying so.
        title, path: figure title; where to save (``.png``/``.pdf``/``.svg``; ``None`` saves nothing).

    The loss, x-MSE and invertibility curves of stage 1 have distinct line and marker styles (the
    loss often equals the x-MSE); a curve of at most five points is drawn with large markers, and
    when it is alone in its panel (the validation panels) its values are written next to them.
    """
    if not isinstance(history, Mapping):
        raise ValueError(f"history must be a dict like SGM.history, got {type(history).__name__}")
    panels = []
    for name, stage, keys, ylabel in _PANELS:
        record = history.get(stage, {})
        lines = [(label, s) for key, step_key, label in keys if (s := _series(record, key, step_key)) is not None]
        if lines:
            panels.append((name, lines, ylabel))
    fig = new_figure(4.0 * max(1, len(panels)), 3.2)
    if not panels:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no training history", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (name, lines, ylabel) in zip(axes, panels):
            for label, (x, y) in lines:
                _plot_series(ax, x, y, label, alone=len(lines) == 1)
            # Losses span decades; a log axis shows the late progress, but only if all are positive
            # and they do span more than a decade (a narrow log axis labels every minor tick).
            ys = np.concatenate([y for _, (_, y) in lines])
            finite = ys[np.isfinite(ys)]
            if name.endswith("training") and finite.size and (finite > 0).all() and finite.max() > 10 * finite.min():
                ax.set_yscale("log")
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            if len(lines) > 1:
                ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def iwlb_plot(table: Mapping[str, Mapping[int, tuple[float, float]]], *, title: str | None = None,
              xlabel: str = "training set size", ylabel: str = "test IWLB (nats)", path=None) -> Figure:
    """IWLB against training-set size, one line with error bars per model (the paper's figure 11).

    Args:
        table: ``{model name: {train size: (mean, stderr)}}``, e.g. ``{"VAE": {12500: (1015.0, 8.0),
            50000: (1270.0, 5.0)}, "AugVAE": {...}}``.
        title, xlabel, ylabel: labels (e.g. ``title="rotated MNIST, θ = 90°"``).
        path: where to save.
    """
    if not isinstance(table, Mapping) or not table:
        raise ValueError("table must be a non-empty dict {model: {train_size: (mean, stderr)}}")
    fig = new_figure(5.5, 3.8)
    ax = fig.subplots()
    sizes: set[float] = set()
    for model, row in table.items():
        if not isinstance(row, Mapping) or not row:
            raise ValueError(f"table[{model!r}] must be a non-empty dict {{train_size: (mean, stderr)}}")
        try:
            points = sorted((float(n), float(m), float(e)) for n, (m, e) in row.items())
        except (TypeError, ValueError) as err:
            raise ValueError(f"table[{model!r}] values must be (mean, stderr) pairs of numbers: {err}") from err
        x, y, err = (np.array(c) for c in zip(*points))
        ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, label=str(model))
        sizes.update(x.tolist())
    ticks = sorted(sizes)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t / 1000:g}k" if t >= 1000 else f"{t:g}" for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return finish(fig, path)
