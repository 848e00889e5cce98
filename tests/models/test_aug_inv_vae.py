"""AugVAE and InvVAE (SPEC 6): the honest InvVAE bound, its decomposition, the prototype bound, AugVAE."""

from __future__ import annotations

import copy
import math

import pyro
import pytest
import torch
from pyro import poutine

from sgm_pyro.groups import AffineGroup
from sgm_pyro.inference.iwlb import iwlb
from sgm_pyro.models import SGM
from sgm_pyro.models.aug_vae import AugVAE, SGMAugmentation
from sgm_pyro.models.inv_vae import InvVAE

SHAPE = (1, 16, 16)
SMALL = {"channels": (4, 8), "hidden": 16}  # the reference architecture, narrowed for speed


def blobs(n: int, seed: int = 0) -> torch.Tensor:
    """Off-centre elongated blobs on a -1 background, ``(n, 1, 16, 16)``: rotation visibly changes them."""
    g = torch.Generator().manual_seed(seed)
    centre = 4 + torch.rand(n, 2, generator=g) * 4
    grid = torch.arange(16, dtype=torch.float32)
    d2 = ((grid[None, :, None] - centre[:, None, None, 0]) / 3) ** 2 + (grid[None, None, :] - centre[:, None, None, 1]) ** 2
    return (2 * torch.exp(-d2 / 4) - 1).unsqueeze(1)


def rotation_sgm(prior="box") -> SGM:
    torch.manual_seed(0)
    group = AffineGroup(bounds=(math.pi,), generators=("rot",))
    kwargs = {} if prior == "box" else {"feature_hidden": (16,), "hidden": (8, 8), "transforms": 1}
    # the reference head starts at the identity pose, which the closed forms below rely on
    return SGM(group, SHAPE, prior, inference_kwargs={"hidden": (16,), "rotation_head": "real"}, prior_kwargs=kwargs)


@pytest.fixture(params=["box", "flow"])
def inv(request) -> InvVAE:
    return InvVAE(rotation_sgm(request.param), **SMALL)


def site_log_probs(trace) -> dict[str, torch.Tensor]:
    trace.compute_log_prob()
    return {n: s["log_prob"] for n, s in trace.nodes.items() if s["type"] == "sample"}


def test_honest_bound_is_finite_and_tightens_with_k(inv):
    x = blobs(8)
    b1, lw1 = iwlb(inv.model, inv.guide, x, num_samples=1, seed=3, return_log_weights=True)
    b16, lw16 = iwlb(inv.model, inv.guide, x, num_samples=16, chunk_size=8, seed=3, return_log_weights=True)
    assert b16.shape == (8,) and torch.isfinite(b16).all()
    # Seeded particles are nested: the K=1 run used the first particle of the K=16 run.
    torch.testing.assert_close(lw1[0], lw16[0])
    assert b16.mean() > b1.mean()


def squashed_inv_vae(mean: float) -> InvVAE:
    """InvVAE on a squashed (tx, ty) box whose pose network sits at pre-tanh mean ``(mean, -mean)``."""
    torch.manual_seed(0)
    group = AffineGroup(bounds=(0.75, 0.75), generators=("tx", "ty"), squash=True)
    sgm = SGM(group, SHAPE, "box", inference_kwargs={"hidden": (16,), "sigma_init": 0.05})
    with torch.no_grad():
        sgm.inference.head[-1].bias.copy_(torch.tensor([mean, -mean]))  # zero last layer: a constant pose
    return InvVAE(sgm, **SMALL)


def honest_log_weights(model, guide, x, values=None):
    """``(K, N)`` honest log weights; ``values`` ``{"eta", "z"}`` fixes the particles (else traced draws)."""
    with pyro.plate("particles", 32, dim=-2):
        if values is None:
            g = poutine.trace(guide).get_trace(x)
            values = {k: g.nodes[k]["value"] for k in ("eta", "z")}
        else:
            g = poutine.trace(poutine.condition(guide, data=values)).get_trace(x)
        m = poutine.trace(poutine.condition(model, data=values)).get_trace(x)
    lp, lq = site_log_probs(m), site_log_probs(g)
    return lp["z"] + lp["eta"] + lp["x"] - lq["eta"] - lq["z"], g


@pytest.mark.parametrize("mean", [2.0, 9.0, 12.0])
def test_honest_bound_on_a_squashed_group_matches_float64_arithmetic(mean):
    # dSprites and GalaxyMNIST boxes are squashed; a saturated pose network rounds tanh to ±1 in
    # float32. On the same particles, the float32 bound must be finite and must not exceed the bound
    # computed in float64 (an under-estimated log q inflates every importance weight).
    inv32 = squashed_inv_vae(mean)
    inv64 = copy.deepcopy(inv32).double()
    x = blobs(4)
    torch.manual_seed(5)
    lw32, g32 = honest_log_weights(inv32.model, inv32.guide, x)
    u = g32.nodes["eta"]["fn"]._cache[1]  # the pre-tanh draws; float64 resolves them where float32 cannot
    eta64 = inv64.sgm.group.to_box(u.double())
    lw64, _ = honest_log_weights(inv64.model, inv64.guide, x.double(),
                                 {"eta": eta64, "z": g32.nodes["z"]["value"].double()})
    b32, b64 = (torch.logsumexp(lw, 0) - math.log(32) for lw in (lw32.double(), lw64))
    assert torch.isfinite(b32).all()
    assert (b32 <= b64 + 1e-2).all() and (b32 - b64).abs().max() < 1e-2
    # The IWLB itself, vectorised and seeded (stitched particles lose their pre-tanh value): finite.
    assert torch.isfinite(inv32.log_likelihood(x, 16)).all()
    assert torch.isfinite(inv32.log_likelihood(x, 8, seed=1)).all()


def test_chunked_particles_match_one_at_a_time(inv):
    """Vectorised particles (flatten to warp, reshape back) give the same bound as chunks of one."""
    x = blobs(5)
    one = inv.log_likelihood(x, 6, chunk_size=1, seed=7)
    torch.testing.assert_close(inv.log_likelihood(x, 6, chunk_size=6, seed=7), one, rtol=0, atol=1e-3)


def test_identity_pose_weight_is_the_vae_weight_plus_the_eta_term():
    """q concentrated at η = 0 and a uniform box prior: every honest log weight must equal the plain
    VAE's log weight for the same z plus log p(η) − log q(η | x), computed here by hand."""
    inv = InvVAE(rotation_sgm("box"), **SMALL)
    sigma = 1e-6
    with torch.no_grad():
        inv.sgm.inference.log_sigma.fill_(math.log(sigma))  # mean head is zero-initialised: mode η = 0
    x = blobs(6)
    g_inv = poutine.trace(inv.guide).get_trace(x)
    lp_inv = site_log_probs(poutine.trace(poutine.replay(inv.model, trace=g_inv)).get_trace(x))
    lq_inv = site_log_probs(g_inv)
    log_w_inv = lp_inv["z"] + lp_inv["eta"] + lp_inv["x"] - lq_inv["eta"] - lq_inv["z"]

    z = g_inv.nodes["z"]["value"]
    vae = inv.vae  # the plain VAE's log weight for the same z, by hand
    with torch.no_grad():
        log_w_vae = vae.prior().log_prob(z) + vae.likelihood(z).log_prob(x) - vae.posterior(x).log_prob(z)

    eta = g_inv.nodes["eta"]["value"][:, 0]
    assert eta.abs().max() < 1e-4
    scale = sigma * math.pi  # q = N(0, σ b) mapped onto the unsquashed box of half-width b = π
    log_q_eta = -math.log(scale) - 0.5 * math.log(2 * math.pi) - 0.5 * (eta / scale) ** 2
    log_p_eta = -math.log(2 * math.pi)  # uniform on [-π, π]
    torch.testing.assert_close(log_w_inv, log_w_vae + log_p_eta - log_q_eta, rtol=0, atol=2e-2)


def test_prototype_bound_is_the_reference_formula_of_spec_6():
    # K = 1: log p_ψ(η | x̂) + log p(x̂ | z) + log p(z) − log q_ω(η | x) − log q(z | x̂), x̂ = T_η⁻¹(x),
    # written out with closed forms (uniform box prior, q_ω = N(π μ, π σ) on the unsquashed circle).
    inv = InvVAE(rotation_sgm("box"), **SMALL)
    with torch.no_grad():
        inv.sgm.inference.log_sigma.fill_(math.log(0.3))
        inv.sgm.inference.head[-1].bias.normal_(0, 0.5)
    x = blobs(6)
    torch.manual_seed(0)
    proto = inv.prototype_bound(x, 1)
    torch.manual_seed(0)  # the same draws, in the same order: η, then z
    q = inv.sgm.inference.distribution(x)
    eta = q.sample((1,))[0]
    x_hat = inv.sgm.group.apply(x, -eta)
    q_z = inv.vae.posterior(x_hat)
    z = q_z.sample()
    with torch.no_grad():
        log_q_eta = torch.distributions.Normal(inv.sgm.inference.mode(x), math.pi * 0.3).log_prob(eta).sum(-1)
        expected = (-math.log(2 * math.pi) + inv.vae.likelihood(z).log_prob(x_hat) + inv.vae.prior().log_prob(z)
                    - log_q_eta - q_z.log_prob(z))
    torch.testing.assert_close(proto, expected, rtol=1e-5, atol=1e-3)
    assert (proto - inv.log_likelihood(x, 8, seed=0)).abs().max() > 1e-2  # a different quantity


def test_training_updates_the_vae_and_leaves_the_sgm_frozen(inv):
    x = blobs(16)
    sgm_before = {k: v.clone() for k, v in inv.sgm.state_dict().items()}
    vae_before = {k: v.clone() for k, v in inv.vae.state_dict().items()}
    history = inv.fit(x, steps=3, batch_size=8, progress=False, val_images=x[:4], val_every=3)
    assert len(history["loss"]) == 3 and all(math.isfinite(v) for v in history["loss"])
    assert all(torch.equal(v, inv.sgm.state_dict()[k]) for k, v in sgm_before.items())
    assert any(not torch.equal(v, inv.vae.state_dict()[k]) for k, v in vae_before.items())
    assert not inv.sgm.training and set(inv.state_dict()) == {f"vae.{k}" for k in vae_before}
    assert inv.reconstruct(x).shape == x.shape


def test_aug_vae_augment_resamples_in_range_and_trains():
    sgm = rotation_sgm("box")
    aug = AugVAE(SHAPE, sgm, **SMALL)
    x = blobs(8)
    torch.manual_seed(1)
    y = aug.augment(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    moved = (y - x).abs().amax(dim=(1, 2, 3)) > 0.1  # a draw near η' = η can leave one almost still
    assert moved.float().mean() >= 0.75
    assert aug.sgm is sgm and not any(n.startswith("augment") for n in aug.state_dict())
    history = aug.fit(x, steps=2, batch_size=4, progress=False)  # fit_vae picks up aug.augment
    assert len(history["loss"]) == 2
    assert aug.log_likelihood(x, 4).shape == (8,)


def test_bad_inputs_raise(inv):
    x = blobs(3)
    with pytest.raises(ValueError, match="image shape"):
        inv.log_likelihood(torch.zeros(3, 1, 28, 28), 4)
    with pytest.raises(ValueError, match="num_samples"):
        inv.log_likelihood(x, 0)
    with pytest.raises(ValueError, match="num_samples"):
        inv.prototype_bound(x, 0)
    with pytest.raises(ValueError, match="shape"):
        inv.prototype_bound(x[0], 4)
    with pytest.raises(ValueError, match="SGM"):
        InvVAE("not an sgm")
    with pytest.raises(ValueError, match="SGM"):
        AugVAE(SHAPE, object())
    with pytest.raises(ValueError, match="shape"):
        AugVAE((1, 28, 28), inv.sgm)
    with pytest.raises(ValueError, match="distribution"):
        InvVAE(SGM(inv.sgm.group, SHAPE, lambda x_hat: None))
    with pytest.raises(ValueError, match="image shape"):
        SGMAugmentation(inv.sgm)(torch.zeros(2, 1, 8, 8))
