"""Pyro programs: the prototype inference network, prior programs, the SGM and the VAE family."""

from .aug_vae import AugVAE, SGMAugmentation
from .inv_vae import InvVAE
from .priors import PRIORS, BoxPrior, CircularFlowPrior, DiscreteRotationPrior, FlowPrior, PriorProgram, make_prior
from .prototype import PrototypeInference
from .sgm import SGM
from .vae import VAE, StandardAugmentation, StdAugVAE

__all__ = ["AugVAE", "InvVAE", "SGMAugmentation", "PRIORS", "BoxPrior", "CircularFlowPrior", "DiscreteRotationPrior", "FlowPrior", "PriorProgram",
           "PrototypeInference", "SGM", "StandardAugmentation", "StdAugVAE", "VAE", "make_prior"]
