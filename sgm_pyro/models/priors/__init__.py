"""Prior programs p_ψ(η | x̂): Pyro programs that sample the site ``"eta"`` given prototypes.

Any callable ``prior(x_hat)`` that samples ``"eta"`` (batch ``(N,)``, event ``(dim,)``, inside the
caller's data plate) is a prior program; the shipped ones below are ``PyroModule``s that also
expose ``distribution(x_hat)`` (a fresh ``torch.distributions.Distribution``, zuko style).
"""

from .base import PriorProgram
from .box import BoxPrior, ClosedBoxUniform
from .box_map import BoxLatent, BoxLatentTransform
from .circular import CircularAngleFlow, CircularFlowPrior
from .discrete_rotation import DiscreteRotationPrior
from .features import FeatureNet
from .flow import ConditionalBoxFlow, FlowPrior
from .registry import PRIORS, make_prior
from .rotation_joint import RotationJoint, wrap_angle

__all__ = [
    "BoxLatent", "BoxLatentTransform", "BoxPrior", "CircularAngleFlow", "CircularFlowPrior", "ClosedBoxUniform",
    "ConditionalBoxFlow", "DiscreteRotationPrior", "FeatureNet", "FlowPrior", "PRIORS", "PriorProgram",
    "RotationJoint", "make_prior", "wrap_angle",
]
