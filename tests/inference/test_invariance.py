"""Stage-1 invariance loss (SPEC 3): zero for a perfectly invariant network, large otherwise."""

import math

import torch

from sgm_pyro.groups import AffineGroup
from sgm_pyro.inference import InvarianceLoss
from sgm_pyro.models import PrototypeInference


def off_centre_blob(n=33, radius=9.0, angle=0.0, sigma=2.0):
    """A smooth blob at ``radius`` pixels from the centre, at ``angle`` (counter-clockwise as displayed)."""
    c = (n - 1) / 2
    col = c + radius * math.cos(angle)
    row = c - radius * math.sin(angle)
    r = torch.arange(n, dtype=torch.float64)[:, None]
    k = torch.arange(n, dtype=torch.float64)[None, :]
    return (2 * torch.exp(-((r - row) ** 2 + (k - col) ** 2) / (2 * sigma**2)) - 1)[None, None]


class OracleRotation(PrototypeInference):
    """Reads the rotation of an off-centre blob from its centre of mass: exactly equivariant."""

    def mean_unconstrained(self, x):
        w = (x + 1)[:, 0]
        n = x.shape[-1]
        idx = torch.arange(n, dtype=x.dtype) - (n - 1) / 2
        col = (w.sum(-2) * idx).sum(-1) / w.sum((-1, -2))
        row = (w.sum(-1) * idx).sum(-1) / w.sum((-1, -2))
        return (torch.atan2(-row, col) / math.pi)[:, None]  # to_box multiplies by the bound π


def make_group():
    return AffineGroup(bounds=(math.pi,), generators=("rot",)).double()


def test_loss_vanishes_for_a_perfectly_invariant_network():
    torch.manual_seed(0)
    g = make_group()
    x = torch.cat([off_centre_blob(angle=a) for a in (0.3, 1.7, -2.5, 3.0)])
    oracle = OracleRotation(g, (1, 33, 33), hidden=(4,), sigma_init=1e-9).double()
    terms = InvarianceLoss(num_draws=5, inv_weight=0.0)(oracle, x)
    # A network that ignores the input (the identity pose) is far from invariant.
    baseline = PrototypeInference(g, (1, 33, 33), hidden=(4,), sigma_init=1e-9).double()
    base = InvarianceLoss(num_draws=5, inv_weight=0.0)(baseline, x)
    assert terms["mse"].item() < 1e-4
    assert base["mse"].item() > 100 * terms["mse"].item()


def test_non_symmetric_variant_and_invertibility_term():
    torch.manual_seed(1)
    g = make_group()
    x = torch.cat([off_centre_blob(angle=a) for a in (0.0, 2.0)])
    oracle = OracleRotation(g, (1, 33, 33), hidden=(4,), sigma_init=1e-9).double()
    terms = InvarianceLoss(num_draws=3, inv_weight=1.0, symmetric=False)(oracle, x)
    assert set(terms) == {"loss", "mse", "inv"}
    assert terms["mse"].item() < 1e-4
    # Rotations keep the blob inside the frame, so going to the prototype and back loses little.
    assert terms["inv"].item() < 0.01
    assert torch.isclose(terms["loss"], terms["mse"] + terms["inv"])


def test_invertibility_term_penalises_content_pushed_out_of_frame():
    torch.manual_seed(2)
    g = AffineGroup(bounds=(2.0, 2.0), generators=("tx", "ty")).double()
    x = off_centre_blob(radius=0.0).expand(4, -1, -1, -1)

    class FarAway(PrototypeInference):
        def mean_unconstrained(self, x):  # a pose that moves the content out of the frame
            return torch.full((x.shape[0], 2), 1.0, dtype=x.dtype)

    far = FarAway(g, (1, 33, 33), hidden=(4,), sigma_init=1e-9).double()
    loss = InvarianceLoss(num_draws=2, inv_weight=1.0, augment_scale=0.0)
    lost = loss(far, x)["inv"].item()
    everything = (x + 1).square().mean().item()  # the error when all content has left the frame
    assert lost > 0.95 * everything
    kept = loss(PrototypeInference(g, (1, 33, 33), hidden=(4,), sigma_init=1e-9).double(), x)["inv"].item()
    assert kept < 1e-6


def test_gradients_reach_the_network():
    torch.manual_seed(3)
    g = make_group()
    net = PrototypeInference(g, (1, 33, 33), hidden=(8,)).double()
    x = torch.cat([off_centre_blob(angle=a) for a in (0.0, 1.0)])
    InvarianceLoss(num_draws=2)(net, x)["loss"].backward()
    last = net.head[-1]
    assert last.weight.grad.abs().sum() > 0 and net.log_sigma.grad is not None
