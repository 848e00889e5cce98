"""How the Pyro programs are fitted and scored: invariance loss, the two stages, bounds."""

from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .invariance import InvarianceLoss
from .distributed import close_distributed, init_distributed, is_main_process
from .iwlb import iwlb, iwlb_distributed
from .param_scope import private_param_store
from .progress import NonFiniteLossError
from .sgm_training import fit_sgm
from .stage1 import InferenceConfig, fit_inference
from .vae_training import fit_vae
from .stage2 import PriorConfig, PriorLikelihoodLoss, fit_prior, prior_program, reaugmented_pairs

__all__ = ["CheckpointError", "InferenceConfig", "InvarianceLoss", "NonFiniteLossError", "PriorConfig",
           "PriorLikelihoodLoss", "fit_inference", "fit_prior", "fit_sgm", "fit_vae", "iwlb", "iwlb_distributed", "init_distributed", "is_main_process", "close_distributed", "load_checkpoint", "prior_program",
           "private_param_store", "reaugmented_pairs", "save_atomic"]
