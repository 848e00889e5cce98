"""Transformation groups T_η: affine (Lie-algebra coordinates), HSV colour, and their product."""

from .affine import AFFINE_NAMES, AffineGroup
from .base import Group, value_checks
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


__all__ = ["AFFINE_NAMES", "COLOR_NAMES", "AffineGroup", "ColorGroup", "Group", "GROUPS", "ProductGroup",
           "hsv_to_rgb", "make_group", "rgb_to_hsv", "value_checks"]
