"""Procedural data sets with known poses for the symmetry-recovery benchmark (docs/recovery.md).

``TASKS`` maps a task name to a :class:`RecoveryTask`; ``task.generate(n, seed)`` returns a
:class:`RecoveryData` (images, true η in the group's own convention, class labels).
"""

from .glyphs import GLYPHS, coloured, dsprite_prototype, glyph
from .task import ClassLaw, RecoveryData, RecoveryTask, draw_eta
from .tasks import TASKS, c4, get_task

__all__ = ["GLYPHS", "TASKS", "ClassLaw", "RecoveryData", "RecoveryTask", "c4", "coloured", "draw_eta",
           "dsprite_prototype", "get_task", "glyph"]
