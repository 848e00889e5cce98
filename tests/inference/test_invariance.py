"""Stage-1 invariance loss (SPEC 3): zero for a perfectly invariant network, large otherwise."""

import math

import pytest
import torch

from sgm_pyro.groups import AffineGroup
from sgm_pyro.inference import InferenceConfig, InvarianceLoss
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
    oracle = OracleRotation(g, (1, 33, 33), hidden=(4,), sigma_init=1e-9, rotation_head="real").double()
    terms = InvarianceLoss(num_draws=3, inv_weight=0.25, symmetric=False)(oracle, x)
    assert set(terms) == {"loss", "mse", "inv"}
    assert terms["mse"].item() < 1e-4
    # Rotations keep the blob inside the frame, so going to the prototype and back loses little
    # (two bilinear interpolations: a small but non-zero error, weighted by inv_weight in the loss).
    assert 1e-6 < terms["inv"].item() < 0.01
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.25 * terms["inv"])


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


@pytest.mark.parametrize("head", ["real", "circle", "equivariant"])
def test_gradients_reach_the_network(head):
    torch.manual_seed(3)
    g = make_group()
    net = PrototypeInference(g, (1, 33, 33), hidden=(8,), rotation_head=head).double()
    x = torch.cat([off_centre_blob(angle=a) for a in (0.0, 1.0)])
    InvarianceLoss(num_draws=2)(net, x)["loss"].backward()
    # a rotation-only group: the equivariant head alone gives the pose, through its φ
    last = net.equivariant.phi[-1] if head == "equivariant" else net.head[-1]
    assert last.weight.grad.abs().sum() > 0 and net.log_sigma.grad is not None


def similarity(tx, ty, rot, log_s):
    """η of a similarity transform (isotropic scale): these close under composition, unlike anisotropic ones."""
    return torch.tensor([[tx, ty, rot, log_s, log_s]], dtype=torch.float64)


def log_coordinates(g, matrix):
    """η with ``expm(Σ η_i G_i) = matrix`` for a similarity matrix (3, 3), via scipy's matrix logarithm."""
    from scipy.linalg import logm

    algebra = torch.from_numpy(logm(matrix.numpy()).real)
    basis = g.generators.double().reshape(g.dim, 9).T  # (9, dim)
    eta = torch.linalg.lstsq(basis, algebra.reshape(9, 1)).solution.T
    assert torch.allclose(g.matrix(eta)[0], matrix, atol=1e-10)
    return eta


def test_chain_order_with_non_commuting_affine_transformations(monkeypatch):
    # Rotation, scale and translation do not commute. Fixed views r1, r2 and a pose network that
    # answers η1 for view 1 and η2 = log(A(r2) A(r1)⁻¹ A(η1)) for view 2: exactly the poses of an
    # equivariant network, so the chain r2⁻¹ ∘ η2 ∘ η1⁻¹ ∘ r1 (r1 first) is the identity and the loss
    # vanishes. Any other order of the four leaves a visible warp.
    torch.manual_seed(4)
    g = AffineGroup().double()
    r1, r2 = similarity(0.2, -0.1, 0.9, 0.15), similarity(-0.15, 0.2, -1.3, -0.1)
    eta1 = similarity(0.1, 0.05, 0.4, 0.1)
    eta2 = log_coordinates(g, g.matrix(r2)[0] @ torch.linalg.inv(g.matrix(r1)[0]) @ g.matrix(eta1)[0])
    A = {k: g.matrix(v)[0] for k, v in dict(r1=r1, r2=r2, e1=eta1, e2=eta2).items()}
    inv = torch.linalg.inv
    wrong = [A["r2"] @ inv(A["e2"]) @ A["e1"] @ inv(A["r1"]), inv(A["r1"]) @ A["e2"] @ inv(A["e1"]) @ A["r2"],
             inv(A["r2"]) @ A["r1"] @ inv(A["e1"]) @ A["e2"], A["e2"] @ inv(A["r2"]) @ inv(A["e1"]) @ A["r1"]]
    assert min((m - torch.eye(3, dtype=torch.float64)).abs().max() for m in wrong) > 0.05

    views = iter([r1, r2])
    monkeypatch.setattr(g, "sample_uniform", lambda n, scale=1.0, generator=None: next(views).expand(n, -1))

    class KnowsTheViews(PrototypeInference):
        def mean_unconstrained(self, x):  # first half: view 1, second half: view 2 (one batched call)
            half = x.shape[0] // 2
            return self.group.from_box(torch.cat([eta1.expand(half, -1), eta2.expand(half, -1)]))

    net = KnowsTheViews(g, (1, 33, 33), hidden=(4,), sigma_init=1e-12, rotation_head="real").double()
    x = torch.cat([off_centre_blob(radius=5.0, angle=a) for a in (0.3, 2.0)])
    terms = InvarianceLoss(num_draws=1, inv_weight=0.0)(net, x)
    assert terms["mse"].item() < 1e-12


def written_out_loss(inference, x, num_draws, inv_weight, symmetric):
    """SPEC 3 as written: one ``apply_chain`` per term, from the same draws as the loss makes."""
    g, s, n = inference.group, num_draws, x.shape[0]
    xs = x.repeat(s, 1, 1, 1)
    r1 = g.sample_uniform(s * n).to(x.dtype)
    r2 = g.sample_uniform(s * n).to(x.dtype) if symmetric else g.identity(s * n, dtype=x.dtype)
    x_r1 = g.apply(xs, r1)
    eta = inference.rsample(torch.cat([x_r1, g.apply(xs, r2) if symmetric else xs]))
    eta1, eta2 = eta[: s * n], eta[s * n:]
    mse = (g.apply_chain(xs, [r1, g.inverse(eta1), eta2, g.inverse(r2)]) - xs).square().mean()
    inv = (g.apply(g.apply_chain(xs, [r1, g.inverse(eta1)]), eta1) - x_r1).square().mean()
    return {"mse": mse, "inv": inv, "loss": mse + inv_weight * inv}


@pytest.mark.parametrize("case", ["affine", "affine-border", "affine+color", "one-sided"])
def test_loss_equals_the_chains_written_out(case):
    # The loss builds each element once, composes matrices and warps images minus the background;
    # the terms must be those of the four chains of SPEC 3 applied one by one.
    from sgm_pyro.groups import ColorGroup, ProductGroup
    g = {"affine": AffineGroup(fill=-0.9), "affine-border": AffineGroup(padding_mode="border"),
         "affine+color": ProductGroup(ColorGroup(offset=(0.5, 0, 0)), AffineGroup()),
         "one-sided": AffineGroup()}[case].double()
    channels = 3 if case == "affine+color" else 1
    x = torch.rand(3, channels, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 1.6 - 0.8
    net = PrototypeInference(g, (channels, 12, 12), hidden=(16,), sigma_init=0.1, rotation_head="real").double()
    torch.nn.init.normal_(net.head[-1].weight, std=0.3)  # poses that vary with the image
    symmetric = case != "one-sided"
    torch.manual_seed(7)
    terms = InvarianceLoss(num_draws=2, inv_weight=0.3, symmetric=symmetric)(net, x)
    torch.manual_seed(7)
    ref = written_out_loss(net, x, 2, 0.3, symmetric)
    for k in ("mse", "inv", "loss"):
        assert torch.allclose(terms[k], ref[k], rtol=1e-10, atol=1e-13), k
    assert ref["inv"] > 1e-3 and ref["mse"] > 1e-3


def test_reaugmented_prototype_uses_the_pose_of_the_random_view():
    # SPEC 4: x̂' = x warped by η_rnd then f(x_rnd)⁻¹. For an equivariant pose network f(x_rnd) = f(x) + η_rnd,
    # so every random view gives back the same prototype; a draw of a wide q instead jitters it.
    from sgm_pyro.inference.stage2 import PriorConfig, reaugmented_pairs

    torch.manual_seed(5)
    g = make_group()
    x = off_centre_blob(angle=0.8)
    oracle = OracleRotation(g, (1, 33, 33), hidden=(4,), sigma_init=0.2).double()
    spread = {}
    for pose in ("mode", "sample"):
        x_hat, eta = reaugmented_pairs(oracle, x, 8, 1.0, pose)
        assert x_hat.shape == (8, 1, 33, 33) and eta.shape == (8, 1)
        assert eta.std() > 0.2  # η_x is still a draw of q, whatever poses the view
        spread[pose] = (x_hat - x_hat.mean(0)).abs().mean().item()
    assert spread["mode"] < 0.02 and spread["sample"] > 5 * spread["mode"]
    assert PriorConfig().reaugment_pose == "mode"
    with pytest.raises(ValueError, match="reaugment_pose"):
        PriorConfig(reaugment_pose="draw")


def test_plain_draws_pair_the_pose_with_the_prototype_itself():
    # a network that is not equivariant (it answers 0.3 whatever the view): re-derived prototypes keep
    # the view's rotation, plain draws are x warped once by f(x)⁻¹
    from sgm_pyro.inference.stage2 import PriorConfig, reaugmented_pairs

    torch.manual_seed(0)
    g = make_group()
    net = PrototypeInference(g, (1, 33, 33), hidden=(4,), rotation_head="real", sigma_init=1e-9).double()
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.fill_(0.3 / math.pi)  # to_box multiplies by the bound π
    x = torch.cat([off_centre_blob(angle=a) for a in (0.0, 1.5, -2.0)])
    x_hat, eta = reaugmented_pairs(net, x, 4, 1.0, plain_draws=2)
    plain = g.apply(x, g.inverse(net.mode(x)))
    torch.testing.assert_close(x_hat[:6], torch.cat([plain, plain]))
    assert (x_hat[6:] - torch.cat([plain, plain])).abs().amax() > 0.5  # the random views' rotations remain
    torch.testing.assert_close(eta, torch.full((12, 1), 0.3, dtype=torch.float64), atol=1e-6, rtol=0)
    for bad in (-1, 5):
        with pytest.raises(ValueError, match="plain_draws"):
            reaugmented_pairs(net, x, 4, 1.0, plain_draws=bad)
    with pytest.raises(ValueError, match="plain_draws"):
        PriorConfig(num_draws=2, plain_draws=3)


@pytest.mark.parametrize("angle", [0.0, 0.7, -2.5, math.pi / 2])
def test_upright_prior_scores_the_pose_of_the_image_as_given(angle):
    # the oracle is exactly equivariant, so the views' terms vanish and only the prior remains
    g = make_group()
    net = OracleRotation(g, (1, 33, 33), hidden=(4,), sigma_init=1e-12, rotation_head="real").double()
    x = off_centre_blob(angle=angle)
    plain = InvarianceLoss(num_draws=2, inv_weight=0.0)(net, x)
    terms = InvarianceLoss(num_draws=2, inv_weight=0.0, upright_weight=0.5)(net, x)
    assert "upright" not in plain
    torch.testing.assert_close(terms["upright"], torch.tensor(1.0 - math.cos(angle), dtype=torch.float64),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(terms["loss"] - plain["loss"], 0.5 * terms["upright"], atol=1e-3, rtol=0)


def test_upright_prior_pulls_an_equivariant_head_towards_the_data_as_given():
    # minimising the prior alone turns the equivariant head's canonical orientation to the image's own
    torch.manual_seed(0)
    g = AffineGroup(bounds=(math.pi,), generators=("rot",))
    net = PrototypeInference(g, (1, 16, 16), hidden=(8,), rotation_head="equivariant", rotation_hidden=(16,))
    # blobs at different radii: no two are rotations of each other, so equivariance leaves each free
    x = torch.stack([off_centre_blob(n=16, radius=r, angle=a, sigma=1.5)[0].float()
                     for r, a in ((2, 0.3), (4, 2.0), (6, -1.5))])
    loss = InvarianceLoss(num_draws=1, inv_weight=0.0, upright_weight=1.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = loss(net, x)["upright"].item()
    for _ in range(150):
        opt.zero_grad()
        loss(net, x)["upright"].backward()
        opt.step()
    last = loss(net, x)["upright"].item()
    assert last < 0.1 < first or last < 0.1 * first, (first, last)


def test_the_upright_prior_defaults_to_on_for_the_equivariant_head_only():
    from sgm_pyro.inference.invariance import EQUIVARIANT_UPRIGHT_WEIGHT

    g = make_group()
    heads = {h: PrototypeInference(g, (1, 16, 16), hidden=(4,), rotation_head=h) for h in ("real", "circle",
                                                                                          "equivariant")}
    loss = InvarianceLoss()
    assert [loss.upright_weight_for(heads[h]) for h in ("real", "circle")] == [0.0, 0.0]
    assert loss.upright_weight_for(heads["equivariant"]) == EQUIVARIANT_UPRIGHT_WEIGHT > 0
    assert InvarianceLoss(upright_weight=0.0).upright_weight_for(heads["equivariant"]) == 0.0
    assert InvarianceLoss(upright_weight=0.3).upright_weight_for(heads["real"]) == 0.3


def test_the_default_upright_prior_strengthens_with_concentrated_poses_for_the_equivariant_head_only():
    from sgm_pyro.inference.invariance import EQUIVARIANT_CONCENTRATED_UPRIGHT_WEIGHT, EQUIVARIANT_UPRIGHT_WEIGHT

    g = make_group()
    heads = {h: PrototypeInference(g, (1, 16, 16), hidden=(4,), rotation_head=h) for h in ("real", "circle",
                                                                                          "equivariant")}
    assert EQUIVARIANT_CONCENTRATED_UPRIGHT_WEIGHT > EQUIVARIANT_UPRIGHT_WEIGHT
    top = InvarianceLoss().upright_concentrated_weight_for(heads["equivariant"])
    assert top == EQUIVARIANT_CONCENTRATED_UPRIGHT_WEIGHT
    assert [InvarianceLoss().upright_concentrated_weight_for(heads[h]) for h in ("real", "circle")] == [None, None]
    # a weight the user sets stays constant unless the concentrated weight is set as well
    assert InvarianceLoss(upright_weight=0.3).upright_concentrated_weight_for(heads["equivariant"]) is None
    assert InvarianceLoss(upright_weight=0.3, upright_concentrated_weight=1.0).upright_concentrated_weight_for(
        heads["real"]) == 1.0
    with pytest.raises(ValueError, match="upright_concentrated_weight"):
        InferenceConfig(upright_concentrated_weight=-1.0)


def test_isotropy_prior_scores_the_anisotropy_of_the_pose_of_the_image_as_given():
    g = AffineGroup(bounds=(0.5, 0.5, 0.5, 0.5, 0.5))
    net = PrototypeInference(g, (1, 16, 16), hidden=(4,), rotation_head="real", sigma_init=1e-6)
    with torch.no_grad():  # a constant pose: log_sx 0.2, log_sy -0.1 (unsquashed: η = bounds · output)
        net.head[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.4, -0.2]))
    x = off_centre_blob(n=16, radius=2, angle=0.3, sigma=1.5).float()
    plain = InvarianceLoss(num_draws=1, inv_weight=0.0)
    torch.manual_seed(0)
    base = plain(net, x)
    torch.manual_seed(0)
    terms = InvarianceLoss(num_draws=1, inv_weight=0.0, isotropy_weight=0.5)(net, x)
    assert "isotropy" not in base
    torch.testing.assert_close(terms["isotropy"], torch.tensor(((0.2 + 0.1) / 0.5) ** 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(terms["loss"] - base["loss"], 0.5 * terms["isotropy"], atol=1e-5, rtol=0)
    terms["isotropy"].backward()
    bias_grad = net.head[-1].bias.grad
    assert bias_grad[3] > 0 > bias_grad[4] and bias_grad[:3].abs().max() == 0  # towards log_sx = log_sy
    rotation_only = AffineGroup(bounds=(math.pi,), generators=("rot",))
    net = PrototypeInference(rotation_only, (1, 16, 16), hidden=(4,), rotation_head="real")
    assert "isotropy" not in InvarianceLoss(num_draws=1, inv_weight=0.0, isotropy_weight=1.0)(net, x)


def test_pose_concentration_estimates_the_squared_mean_resultant_without_bias():
    from sgm_pyro.inference.invariance import pose_concentration

    torch.manual_seed(0)
    assert pose_concentration(torch.full((5,), 0.7)).item() == pytest.approx(1.0)
    # evenly spread poses have no concentration at any batch size (the plain |mean|² would be 1/n on average)
    assert pose_concentration(torch.arange(3) * (2 * math.pi / 3)).item() == 0.0
    for kappa in (1.0, 3.0):
        rho = torch.special.i1(torch.tensor(kappa)) / torch.special.i0(torch.tensor(kappa))
        angles = torch.distributions.VonMises(torch.tensor(0.4), torch.tensor(kappa)).sample((4000, 16))
        est = torch.stack([pose_concentration(a) for a in angles]).mean()
        torch.testing.assert_close(est, rho.square(), atol=0.015, rtol=0)


@pytest.mark.parametrize("angles, concentration", [((0.5, 0.5, 0.5), 1.0),
                                                   ((0.5, 0.5 + 2 * math.pi / 3, 0.5 - 2 * math.pi / 3), 0.0)])
def test_the_upright_weight_grows_with_the_concentration_of_the_poses(angles, concentration):
    # concentrated poses (mostly upright data) get the strong prior; poses spread over the circle
    # (fully rotated data, where the prior would fight invariance) keep the base weight
    g = make_group()
    net = OracleRotation(g, (1, 33, 33), hidden=(4,), sigma_init=1e-12, rotation_head="real").double()
    x = torch.cat([off_centre_blob(angle=a) for a in angles])
    plain = InvarianceLoss(num_draws=2, inv_weight=0.0)(net, x)
    terms = InvarianceLoss(num_draws=2, inv_weight=0.0, upright_weight=0.5, upright_concentrated_weight=4.0)(net, x)
    torch.testing.assert_close(terms["pose_concentration"], torch.tensor(concentration, dtype=torch.float64),
                               atol=2e-3, rtol=0)
    weight = 0.5 + 3.5 * concentration
    torch.testing.assert_close(terms["loss"] - plain["loss"], weight * terms["upright"], atol=2e-3, rtol=0)
