"""Analysis: dSprites symmetry-recovery metrics, image statistics, figures and ArviZ export."""

from .circular import circular_std_deg, kuiper_uniform, wrap_degrees
from .dsprites_metrics import (SHAPE_NAMES, band_fraction, heart_metrics, invariance_metrics, middle_band,
                               recovery_metrics, rotation_samples_deg)
from .image_stats import STATISTICS, image_statistics, wasserstein_1d
from .plots import (eta_densities, image_grid, iwlb_plot, marginals_comparison, prototype_grid, resample_grid,
                    rotation_density, training_curves)

__all__ = ["to_inference_data", "importance_inference_data", "importance_summary", "SHAPE_NAMES", "STATISTICS", "band_fraction", "circular_std_deg", "eta_densities", "heart_metrics",
           "image_grid", "image_statistics", "invariance_metrics", "iwlb_plot", "kuiper_uniform", "marginals_comparison",
           "middle_band", "prototype_grid", "recovery_metrics", "resample_grid", "rotation_density",
           "rotation_samples_deg", "training_curves", "wasserstein_1d", "wrap_degrees"]

# The symmetry-recovery benchmark (docs/recovery.md).
from .symmetry_recovery import circular_w1, circular_w1_deg, count_modes, recovery_scores  # noqa: E402

__all__ += ["circular_w1", "circular_w1_deg", "count_modes", "recovery_scores"]

def __getattr__(name: str):
    # ArviZ (and xarray behind it) take seconds to import: load them only when asked for.
    if name in ("to_inference_data", "importance_inference_data", "importance_summary"):
        from . import arviz_export
        return getattr(arviz_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
