"""Analysis: dSprites symmetry-recovery metrics, image statistics, figures and ArviZ export."""

from .circular import circular_std_deg, wrap_degrees
from .dsprites_metrics import (SHAPE_NAMES, band_fraction, heart_metrics, invariance_metrics, middle_band,
                               recovery_metrics, rotation_samples_deg)
from .image_stats import STATISTICS, image_statistics, wasserstein_1d
from .plots import (eta_densities, image_grid, iwlb_plot, marginals_comparison, prototype_grid, resample_grid,
                    rotation_density, training_curves)

__all__ = ["to_inference_data", "SHAPE_NAMES", "STATISTICS", "band_fraction", "circular_std_deg", "eta_densities", "heart_metrics",
           "image_grid", "image_statistics", "invariance_metrics", "iwlb_plot", "marginals_comparison",
           "middle_band", "prototype_grid", "recovery_metrics", "resample_grid", "rotation_density",
           "rotation_samples_deg", "training_curves", "wasserstein_1d", "wrap_degrees"]


def __getattr__(name: str):
    # ArviZ (and xarray behind it) take seconds to import: load them only when asked for.
    if name == "to_inference_data":
        from .arviz_export import to_inference_data
        return to_inference_data
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
