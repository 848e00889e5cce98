"""sgm-pyro: Symmetry-aware Generative Models (Allingham et al., NeurIPS 2024) in Pyro.

The subpackages are attributes of the package, as ``torch.nn`` is of ``torch``: after
``import sgm_pyro``, ``sgm_pyro.data``, ``sgm_pyro.models``, ``sgm_pyro.inference`` and
``sgm_pyro.groups`` are loaded; ``sgm_pyro.analysis`` (matplotlib) and ``sgm_pyro.experiments``
load on first access. The command line (``sgm_pyro.cli``) is never imported by the library.
"""

import importlib

from . import data, groups, inference, models
from .devices import resolve_device
from .groups import AffineGroup, ColorGroup, Group, ProductGroup, make_group
from .inference import InferenceConfig, PriorConfig, fit_sgm, fit_vae, iwlb
from .models import (SGM, VAE, AugVAE, BoxPrior, CircularFlowPrior, DiscreteRotationPrior, FlowPrior, PrototypeInference,
                     InvVAE, StdAugVAE, make_prior)

__version__ = "0.1.0"

_LAZY = ("analysis", "experiments")

__all__ = ["SGM", "AffineGroup", "AugVAE", "InvVAE", "BoxPrior", "CircularFlowPrior", "ColorGroup", "DiscreteRotationPrior",
           "FlowPrior", "Group", "InferenceConfig", "PriorConfig", "ProductGroup", "PrototypeInference",
           "StdAugVAE", "VAE", "analysis", "data", "experiments", "fit_sgm", "fit_vae", "groups", "inference", "iwlb",
           "make_group", "make_prior", "models", "resolve_device"]


def __getattr__(name: str):
    # matplotlib (analysis) takes a second to import: load these subpackages only when asked for.
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
