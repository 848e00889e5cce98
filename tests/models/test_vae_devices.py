"""The VAE family follows its model's device (checked on CPU with the ``meta`` device, no GPU needed)."""

from __future__ import annotations

import math

import pytest
import torch

from sgm_pyro.groups import AffineGroup
from sgm_pyro.models import SGM, VAE
from sgm_pyro.models.aug_vae import AugVAE

SHAPE = (1, 16, 16)
SMALL = {"channels": (4, 8), "hidden": 16}


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, *SHAPE) * 2 - 1


@pytest.mark.parametrize("sigma", ["reference", "calibrated"])
def test_vae_scores_move_x_to_the_models_device(sigma):
    vae = VAE(SHAPE, sigma=sigma, **SMALL).to("meta").eval()
    x = images()  # on the CPU: checked there, then moved to the model
    assert vae.device.type == "meta" and vae.sigma.device.type == "meta"
    assert vae.reconstruct(x).device.type == "meta"
    assert vae.log_likelihood(x, 2).device.type == "meta"
    assert vae.elbo(x).device.type == "meta"


def test_aug_vae_to_moves_its_sgm_too():
    """fit_vae calls vae.to(device): an AugVAE's SGM must follow, or every step resamples on its device."""
    torch.manual_seed(0)
    sgm = SGM(AffineGroup(bounds=(math.pi,), generators=("rot",)), SHAPE, inference_kwargs={"hidden": (8,)})
    aug = AugVAE(SHAPE, sgm, **SMALL).to("meta")
    assert aug.sgm.device.type == "meta"
    assert all(p.device.type == "meta" for p in aug.sgm.parameters())
    assert not any(k.startswith("augment") for k in aug.state_dict())  # still not part of the VAE's state
