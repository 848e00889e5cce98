"""Transformation groups T_η: affine (Lie-algebra coordinates), HSV colour, and their product."""

from .affine import AFFINE_NAMES, AffineGroup
from .base import PERIODS, CoordinateScale, Group, value_checks
from .chain import Chain
from .color import COLOR_NAMES, ColorGroup, hsv_to_rgb, rgb_to_hsv
from .product import ProductGroup, affine_part

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
    for i, name in enumerate(group.names):
        if f[i] > 1 and group.covers_circle(name):
            raise ValueError(f"the {name} box of {group.names} is already the whole circle; "
                             f"its factor must be at most 1, got {float(f[i])}")
    cfg = group.config()
    if cfg["name"] == "affine+color":
        n = len(cfg["affine"]["bounds"])
        cfg["affine"]["bounds"], cfg["color"]["bounds"] = bounds[:n].tolist(), bounds[n:].tolist()
    else:
        cfg["bounds"] = bounds.tolist()
    return make_group(**cfg).to(group.bounds.device)



def narrowed_scale(group: Group, scale: CoordinateScale, factor: CoordinateScale) -> dict[str, float]:
    """``scale`` of ``group``'s box, written as a fraction of that box widened by ``factor``: the
    ``augment_scale`` that keeps the views of a model on ``widen_box(group, factor)`` where they were."""
    ratio = group.per_coordinate(scale).cpu() / group.per_coordinate(factor, "factor").cpu()
    return dict(zip(group.names, ratio.tolist()))


__all__ = ["AFFINE_NAMES", "COLOR_NAMES", "AffineGroup", "Chain", "CoordinateScale", "ColorGroup", "Group", "GROUPS", "ProductGroup",
           "PERIODS", "affine_part", "hsv_to_rgb", "make_group", "narrowed_scale", "rgb_to_hsv", "value_checks", "widen_box"]
