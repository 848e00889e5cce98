"""Every figure of sgm-pyro in one namespace (matplotlib, headless-safe: nothing calls ``show``).

Each function returns a :class:`matplotlib.figure.Figure` and, given ``path=``, saves it (PNG, PDF
or SVG by suffix, parent folders created). The implementations live one concept per file:
image grids in :mod:`.image_plots`, densities in :mod:`.density_plots`, curves in :mod:`.curve_plots`.
"""

from .curve_plots import iwlb_plot, training_curves
from .density_plots import eta_densities, marginals_comparison, rotation_density
from .image_plots import image_grid, prototype_grid, resample_grid

__all__ = ["eta_densities", "image_grid", "iwlb_plot", "marginals_comparison", "prototype_grid", "resample_grid",
           "rotation_density", "training_curves"]
