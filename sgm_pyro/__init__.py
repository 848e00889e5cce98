"""sgm-pyro: Symmetry-aware Generative Models (Allingham et al., NeurIPS 2024) in Pyro."""

from .groups import AffineGroup, ColorGroup, Group, ProductGroup, make_group
from .inference import InferenceConfig, PriorConfig, fit_sgm, fit_vae, iwlb
from .models import (SGM, VAE, AugVAE, BoxPrior, CircularFlowPrior, DiscreteRotationPrior, FlowPrior, PrototypeInference,
                     InvVAE, StdAugVAE, make_prior)

__version__ = "0.1.0"

__all__ = ["SGM", "AffineGroup", "AugVAE", "InvVAE", "BoxPrior", "CircularFlowPrior", "ColorGroup", "DiscreteRotationPrior",
           "FlowPrior", "Group", "InferenceConfig", "PriorConfig", "ProductGroup", "PrototypeInference",
           "StdAugVAE", "VAE", "fit_sgm", "fit_vae", "iwlb", "make_group", "make_prior"]
