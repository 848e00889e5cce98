"""Transformation groups T_η: affine (Lie-algebra coordinates), HSV colour, and their product."""

import math

from .affine import AFFINE_NAMES, AffineGroup
from .base import CoordinateScale, Group, value_checks
from .color import COLOR_NAMES, ColorGroup, hsv_to_rgb, rgb_to_hsv
from .product import ProductGroup

GROUPS = {"affine": AffineGroup, "color": ColorGroup}


def make_group(name: str, **kwargs) -> Group:
    """Build a group by registry name: ``"affine"``, ``"color"`` or ``"affine+color"``.

    For ``"affine+color"`` pass ``affine={...}`` and ``color={...}`` keyword dictionaries.
    ``make_group(**group.config())`` rebuilds ``group``.
    """
    if name == "affine+color":
        sub = {k: {kk: vv for kk, vv in kwargs.get(k, {}).items() if kk != "name"} for k in ("affine", "color")}
        return ProductGroup(ColorGroup(**sub["color"]), AffineGroup(**sub["affine"]))
    if name not in GROUPS:
        raise ValueError(f"unknown group {name!r}; expected one of {sorted(GROUPS) + ['affine+color']}")
    return GROUPS[name](**kwargs)


def widen_box(group: Group, factor: CoordinateScale) -> Group:
    """A copy of ``group`` whose box is ``offset ± factor · bounds`` (``factor`` as in ``Group.per_coordinate``).

    A box wider than the one the random views are drawn from lets the poses reach a view composed
    with the data's own pose (docs/recovery.md, "A pose box wider than the views"). A coordinate
    whose box is already the whole circle (rotation ±π, hue ±0.5) cannot be widened.
    """
    f = group.per_coordinate(factor, "factor").cpu()
    bounds = group.bounds.cpu() * f
    for name, period in (("rot", 2 * math.pi), ("hue", 1.0)):
        if name in group.names:
            i = group.names.index(name)
            if f[i] > 1 and float(group.bounds[i]) >= period / 2 - 1e-6:
                raise ValueError(f"the {name} box of {group.names} is already the whole circle; "
                                 f"its factor must be at most 1, got {float(f[i])}")
    cfg = group.config()
    if cfg["name"] == "affine+color":
        n = len(cfg["affine"]["bounds"])
        cfg["affine"]["bounds"], cfg["color"]["bounds"] = bounds[:n].tolist(), bounds[n:].tolist()
    else:
        cfg["bounds"] = bounds.tolist()
    return make_group(**cfg).to(group.bounds.device)


__all__ = ["AFFINE_NAMES", "COLOR_NAMES", "AffineGroup", "CoordinateScale", "ColorGroup", "Group", "GROUPS", "ProductGroup",
           "hsv_to_rgb", "make_group", "rgb_to_hsv", "value_checks", "widen_box"]
