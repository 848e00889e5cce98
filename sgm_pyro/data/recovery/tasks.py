"""The four tasks of the symmetry-recovery benchmark (docs/recovery.md).

Angles are in radians, translations and log-scales in the affine group's Lie-algebra coordinates
(normalised image units), colour in ``(hue, log_sat, log_val)`` (SPEC 2.1 to 2.4).
"""

from __future__ import annotations

import math
from functools import partial

from torch import Tensor

from ...groups import AffineGroup, ColorGroup, ProductGroup
from ..laws import Sampler, mixture, trunc_normal, uniform
from .glyphs import coloured, dsprite_prototype, glyph
from .task import ClassLaw, RecoveryTask

DSPRITES_BOX = (0.75, 0.75, math.pi, 0.75, 0.75)          # SPEC 2.4, squashed
GALAXY_AFFINE_BOX = (0.25, 0.25, math.pi, 0.25, 0.25)      # SPEC 2.4 GalaxyMNIST, squashed
GALAXY_COLOR_BOX, GALAXY_COLOR_OFFSET = (0.5, 2.31, 0.51), (0.5, 0.0, 0.0)
# Canonical colour of the RGB shapes: HSV (0, 0.6, 0.7); the saturation and value laws below keep
# s·e^{log_sat} and v·e^{log_val} under 1, so no colour change clips.
BASE_SAT, BASE_VAL = 0.6, 0.7


def c4(noise_deg: float = 3.0) -> Sampler:
    """A multiple of 90° (each equally likely) plus U(−noise, noise) degrees, in radians."""
    d = math.radians(noise_deg)
    return mixture([uniform(k * math.pi / 2 - d, k * math.pi / 2 + d) for k in range(4)])


def rotation_group() -> AffineGroup:
    """Rotations only, on the whole circle (bound π), the default unsquashed box."""
    return AffineGroup(bounds=(math.pi,), generators=("rot",))


def dsprites_group() -> AffineGroup:
    return AffineGroup(bounds=DSPRITES_BOX, squash=True)


def galaxy_group() -> ProductGroup:
    return ProductGroup(ColorGroup(bounds=GALAXY_COLOR_BOX, offset=GALAXY_COLOR_OFFSET, squash=True),
                        AffineGroup(bounds=GALAXY_AFFINE_BOX, squash=True))


def _rgb(shape: int) -> Tensor:
    return coloured(dsprite_prototype(shape, 32), BASE_SAT, BASE_VAL)


ISOTROPIC = {"log_sy": "log_sx"}

C4_GLYPH = RecoveryTask(
    "c4-glyph", "an 'F' rotated by a multiple of 90° ± 3°; full rotation box, default prior",
    (1, 32, 32), rotation_group,
    (ClassLaw("F", partial(glyph, "F", 32), {"rot": c4(3.0)}, modes=4),))

MIXED_GLYPHS = RecoveryTask(
    "mixed-glyphs", "an 'F' with C4 rotations ± 3° and an 'L' with U(−60°, 60°), one data set",
    (1, 32, 32), rotation_group,
    (ClassLaw("F", partial(glyph, "F", 32), {"rot": c4(3.0)}, modes=4),
     ClassLaw("L", partial(glyph, "L", 32), {"rot": uniform(-math.pi / 3, math.pi / 3)}, modes=1)))

PARTIAL_AFFINE = RecoveryTask(
    "partial-affine", "a heart translated uniformly in ±0.4, isotropic log-scale N(0, 0.03) in ±0.06, "
    "never rotated; the dSprites box", (1, 32, 32), dsprites_group,
    (ClassLaw("heart", partial(dsprite_prototype, 2, 32),
              {"tx": uniform(-0.4, 0.4), "ty": uniform(-0.4, 0.4), "log_sx": trunc_normal(0.0, 0.03, -0.06, 0.06)},
              tied=ISOTROPIC, modes=1),))

COLOR_AFFINE = RecoveryTask(
    "color-affine", "RGB dSprites shapes with per-shape hue, saturation, value and affine laws; "
    "the GalaxyMNIST box", (3, 32, 32), galaxy_group,
    (
        # The paper's squares: any orientation (one fundamental domain of the square's C4), the
        # lower-right quadrant, a wide scale; every hue.
        ClassLaw("square", partial(_rgb, 0),
                 {"tx": uniform(0.0, 0.2), "ty": uniform(0.0, 0.2), "rot": uniform(-math.pi / 4, math.pi / 4),
                  "log_sx": trunc_normal(0.0, 0.15, -0.2, 0.2), "hue": uniform(0.0, 1.0),
                  "log_sat": uniform(-0.4, 0.4), "log_val": uniform(-0.3, 0.3)},
                 tied=ISOTROPIC, symmetry=4),
        # Ellipses: orientation U(0, π/2), centred horizontally, a narrow vertical band; blue.
        ClassLaw("ellipse", partial(_rgb, 1),
                 {"tx": trunc_normal(0.0, 0.1, -0.2, 0.2), "ty": trunc_normal(0.0, 0.06, -0.075, 0.075),
                  "rot": uniform(0.0, math.pi / 2), "log_sx": trunc_normal(-0.1, 0.1, -0.2, 0.1),
                  "hue": trunc_normal(0.6, 0.05, 0.45, 0.75), "log_sat": uniform(-0.4, 0.4),
                  "log_val": uniform(-0.3, 0.3)},
                 tied=ISOTROPIC, symmetry=2),
        # Hearts: never rotated, large, in the left half and two vertical bands; red (hue std 0.02).
        ClassLaw("heart", partial(_rgb, 2),
                 {"tx": uniform(-0.2, 0.0), "ty": mixture([uniform(-0.2, -0.12), uniform(0.12, 0.2)]),
                  "log_sx": uniform(0.15, 0.2), "hue": trunc_normal(0.0, 0.02, -0.06, 0.06),
                  "log_sat": trunc_normal(0.2, 0.1, 0.0, 0.4), "log_val": uniform(-0.3, 0.3)},
                 tied=ISOTROPIC, modes=1),
    ))

TASKS: dict[str, RecoveryTask] = {t.name: t for t in (C4_GLYPH, MIXED_GLYPHS, PARTIAL_AFFINE, COLOR_AFFINE)}


def get_task(name: str) -> RecoveryTask:
    """The task registered as ``name`` (a key of :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"unknown recovery task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]
