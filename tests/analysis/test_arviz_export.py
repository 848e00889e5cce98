"""ArviZ export of the pose posterior p(η | x) (sgm_pyro.analysis.arviz_export)."""

import math
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its 1.0 refactor on import
    import arviz as az  # noqa: E402

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import sgm_pyro  # noqa: E402
from sgm_pyro.analysis.arviz_export import (MCMC_DIAGNOSTICS_NOTE, importance_inference_data,  # noqa: E402
                                            importance_summary, to_inference_data)
from sgm_pyro.models import InvVAE  # noqa: E402


def _load_ppca():
    """The PPCA model of tests/inference/test_iwlb.py, whose log p(x) and posterior are known exactly."""
    path = Path(__file__).resolve().parents[1] / "inference" / "test_iwlb.py"
    spec = importlib.util.spec_from_file_location("iwlb_ppca", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PPCA = _load_ppca()

SHAPE = (1, 12, 12)
PRIOR_LOC, PRIOR_SCALE = 0.3, 0.4


def bars(n=3, angle=0.0):
    x = -torch.ones(n, *SHAPE)
    x[:, :, 5:7, 2:10] = 1
    rot = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    return rot.apply(x, torch.full((n, 1), angle)).clamp(-1, 1)


def normal_prior(x_hat):
    """A user prior program with a known density: η ~ N(0.3, 0.4²), whatever the prototype."""
    d = dist.Normal(torch.tensor(PRIOR_LOC), torch.tensor(PRIOR_SCALE))
    return pyro.sample("eta", d.expand([x_hat.shape[0], 1]).to_event(1))


def rot_model(prior=normal_prior, pixel_scale=0.1, sigma_init=0.3):
    g = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    # A wide guide (η std ≈ π·0.3) centred at the identity (the zero-initialised reference head) so that
    # it covers the prior: the proposal must dominate the target.
    return sgm_pyro.SGM(g, SHAPE, prior, pixel_scale=pixel_scale,
                        inference_kwargs=dict(hidden=(16,), sigma_init=sigma_init, rotation_head="real"),
                        prior_kwargs=dict(feature_hidden=(16,), hidden=(16,)))


@pytest.fixture(scope="module")
def flow_idata():
    g = sgm_pyro.AffineGroup(bounds=(0.25, math.pi), generators=("tx", "rot"))
    m = sgm_pyro.SGM(g, SHAPE, inference_kwargs=dict(hidden=(16,), sigma_init=0.05), pixel_scale=0.5,
                     prior_kwargs=dict(feature_hidden=(16,), hidden=(16,)))
    return m, to_inference_data(m, bars(3), 100, num_chains=2, num_prior_samples=50, seed=1)


def test_groups_dims_coords_and_shapes(flow_idata):
    m, idata = flow_idata
    for group in ("posterior", "prior", "sample_stats", "observed_data", "constant_data"):
        assert group in idata.groups(), group
    eta = idata.posterior["eta"]
    assert eta.dims == ("chain", "draw", "image", "eta_dim") and eta.shape == (2, 100, 3, 2)
    assert list(eta.coords["eta_dim"].values) == ["tx", "rot"] and list(eta.coords["image"].values) == [0, 1, 2]
    assert idata.prior["eta"].dims == eta.dims and idata.prior["eta"].shape == (2, 50, 3, 2)
    ss = idata.sample_stats
    assert ss["log_weight"].dims == ("chain", "particle", "image") and ss["log_weight"].shape == (2, 400, 3)
    assert ss["eta_proposal"].shape == (2, 400, 3, 2)
    assert ss["pareto_k"].dims == ("image",) and ss["pareto_k"].shape == (3,) and np.isfinite(ss["pareto_k"]).all()
    assert ((ss["importance_ess"] >= 1) & (ss["importance_ess"] <= 800 + 1e-6)).all()
    assert idata.observed_data["x"].shape == (3, *SHAPE)
    assert idata.constant_data["pose"].shape == (3, 2)
    # Each posterior draw is a copy of the proposal it names.
    idx = ss["particle_index"].values
    prop = ss["eta_proposal"].values
    c, d, i = 1, 7, 2
    np.testing.assert_array_equal(eta.values[c, d, i], prop[c, idx[c, d, i], i])


def test_sgm_pseudo_likelihood_stays_out_of_the_log_likelihood_group(flow_idata):
    # SGM.model centres the observation on a warp of x itself: not a density of x, so no LOO/WAIC.
    m, idata = flow_idata
    assert "log_likelihood" not in idata.groups()
    ss = idata.sample_stats
    assert "log_marginal" not in ss and ss["log_pseudo_marginal"].shape == (3,)
    assert ss["log_pseudo_likelihood"].dims == ("chain", "draw", "image")
    assert np.isfinite(ss["log_pseudo_likelihood"]).all()
    assert idata.posterior.attrs["likelihood"] == "pseudo"
    with pytest.raises(TypeError, match="log likelihood"):
        az.loo(idata)


def test_importance_diagnostics_sit_where_arviz_users_look(flow_idata):
    _, idata = flow_idata
    ss = idata.sample_stats
    for group in idata.groups():
        attrs = idata[group].attrs
        assert attrs["mcmc_diagnostics"] == MCMC_DIAGNOSTICS_NOTE and "r_hat" in attrs["mcmc_diagnostics"]
        assert attrs["importance_ess_min"] == pytest.approx(float(ss["importance_ess"].min()))
        assert attrs["pareto_k_max"] == pytest.approx(float(ss["pareto_k"].max()))
    table = importance_summary(idata)
    assert "r_hat" not in table.columns and "ess_bulk" not in table.columns
    row = table.loc["eta[2, rot]"]
    assert row["importance_ess"] == pytest.approx(float(ss["importance_ess"][2]))
    assert row["pareto_k"] == pytest.approx(float(ss["pareto_k"][2]))
    assert row["mean"] == pytest.approx(float(idata.posterior["eta"][..., 2, 1].mean()), abs=1e-3)


def test_summary_and_plot_run(flow_idata, tmp_path):
    _, idata = flow_idata
    summary = az.summary(idata)
    assert {f"eta[{i}, {name}]" for i in range(3) for name in ("tx", "rot")} <= set(summary.index)
    axes = az.plot_posterior(idata, var_names=["eta"], coords={"image": [0]})
    assert np.asarray(axes).size == 2  # one panel per η coordinate of the selected image
    plt.gcf().savefig(tmp_path / "posterior.png")
    plt.close("all")
    assert (tmp_path / "posterior.png").stat().st_size > 0


@pytest.mark.filterwarnings("ignore:Pareto k-hat")
def test_inv_vae_export_is_an_honest_likelihood_with_loo():
    torch.manual_seed(0)
    g = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    sgm = sgm_pyro.SGM(g, SHAPE, "box", inference_kwargs=dict(hidden=(16,), sigma_init=0.05))
    inv = InvVAE(sgm, channels=(4, 8), hidden=16)
    x = bars(3)
    idata = to_inference_data(inv, x, 50, num_proposals=400, seed=2)
    assert "log_likelihood" in idata.groups() and idata.posterior.attrs["likelihood"] == "honest"
    assert idata.posterior["eta"].shape == (1, 50, 3, 1) and idata.posterior["z"].shape == (1, 50, 3, 20)
    assert idata.prior["z"].shape == (1, 50, 3, 20)
    # The pointwise log-likelihood is log N(x; T_η(decoder(z)), σ) of each posterior draw.
    eta = torch.from_numpy(idata.posterior["eta"].values[0, :5]).float()  # (5, 3, 1)
    z = torch.from_numpy(idata.posterior["z"].values[0, :5]).float()
    with torch.no_grad():
        mean = inv._warp(inv.vae.decoder(z), eta)
        expected = pyro.distributions.Normal(mean, inv.vae.sigma).log_prob(x).sum((-3, -2, -1))
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0, :5], expected.numpy(), rtol=1e-5, atol=1e-2)
    # lp is the honest joint log p(z) + log p_ψ(η | decoder(z)) + log p(x | η, z) (uniform box prior: -log 2π).
    with torch.no_grad():
        joint = inv.vae.prior().log_prob(z) - math.log(2 * math.pi) + expected
    np.testing.assert_allclose(idata.sample_stats["lp"].values[0, :5], joint.numpy(), rtol=1e-5, atol=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pointwise k̂ of per-datum latents is high: see docs/arviz.md
        assert np.isfinite(az.loo(idata, pointwise=True).elpd_loo)


@pytest.fixture(scope="module")
def ppca():
    return PPCA.ppca_problem()


@pytest.mark.filterwarnings("ignore:Pareto k-hat")
def test_exported_marginal_is_below_the_closed_form_and_tightens(ppca):
    model, guide, x = PPCA.make_model(ppca), PPCA.rough_guide(ppca), ppca["x"]
    stats = {k: importance_inference_data(model, guide, x, 20, num_proposals=k, seed=k).sample_stats
             for k in (4, 64, 1024)}
    log_px = ppca["log_px"].numpy()
    means = [stats[k]["log_marginal"].values.mean() for k in (4, 64, 1024)]
    assert means[0] < means[1] < means[2] <= log_px.mean() + 0.01
    assert log_px.mean() - means[2] < 0.1 * (log_px.mean() - means[0])
    # Per datum: below log p(x) up to the delta-method Monte Carlo error std(w) / (sqrt(K) mean(w)).
    lw = stats[1024]["log_weight"].values[0]  # (K, image)
    w = np.exp(lw - lw.max(0))
    std_err = w.std(0) / (w.mean(0) * np.sqrt(1024))
    assert (stats[1024]["log_marginal"].values <= log_px + 4 * std_err + 1e-4).all()
    # With the exact posterior as guide every weight is p(x): the export returns log p(x) itself.
    exact = importance_inference_data(model, PPCA.exact_guide(ppca), x, 20, num_proposals=30, seed=0)
    np.testing.assert_allclose(exact.sample_stats["log_marginal"].values, log_px, atol=1e-4)


def test_ppca_posterior_draws_and_pointwise_likelihood_match_closed_forms(ppca):
    model, guide, x = PPCA.make_model(ppca), PPCA.rough_guide(ppca), ppca["x"][:40]
    idata = importance_inference_data(model, guide, x, 1000, num_proposals=4000, seed=1)
    z = idata.posterior["z"].values[0]  # (draw, image, L)
    assert idata.posterior["z"].dims == ("chain", "draw", "image", "z_dim_0")
    ess = idata.sample_stats["importance_ess"].values
    post_sd = ppca["post_cov"].diagonal().sqrt().numpy()
    tol = 5 * post_sd / np.sqrt(ess.min())
    np.testing.assert_allclose(z.mean(0), PPCA.post_loc(ppca, x).numpy(), atol=float(tol.max()))
    np.testing.assert_allclose(z.std(0).mean(0), post_sd, rtol=0.1)
    zt = torch.from_numpy(z[:3]).float()
    expected = pyro.distributions.Normal(zt @ ppca["w"].T + ppca["mu"], PPCA.S).log_prob(x).sum(-1)
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0, :3], expected.numpy(), rtol=1e-5)


def test_flat_likelihood_gives_the_prior_and_its_marginal():
    # With a huge pixel noise the likelihood is constant in η, so p(η | x) is the prior N(0.3, 0.4²)
    # and log p(x) = Σ_pixels log N(x; ·, σ) ≈ -P (log σ + ½ log 2π) exactly (the mean term is ~1e-8).
    sigma = 1e4
    m = rot_model(pixel_scale=sigma)
    idata = to_inference_data(m, bars(2), 2000, num_proposals=8000, seed=3)
    eta = idata.posterior["eta"].values[..., 0]  # (1, 2000, 2)
    ess = idata.sample_stats["importance_ess"].values
    assert (ess > 1000).all()
    tol_mean = 5 * PRIOR_SCALE / math.sqrt(ess.min())
    np.testing.assert_allclose(eta.mean(axis=(0, 1)), PRIOR_LOC, atol=tol_mean)
    np.testing.assert_allclose(eta.std(axis=(0, 1)), PRIOR_SCALE, rtol=0.1)
    assert (idata.sample_stats["pareto_k"].values < 0.7).all()
    pixels = math.prod(SHAPE)
    expected = -pixels * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(idata.sample_stats["log_pseudo_marginal"].values, expected, atol=0.05)
    prior = idata.prior["eta"].values[..., 0]
    np.testing.assert_allclose(prior.mean(), PRIOR_LOC, atol=0.05)
    np.testing.assert_allclose(prior.std(), PRIOR_SCALE, rtol=0.1)


def test_informative_likelihood_matches_a_quadrature_posterior():
    # 1-D rotation: the exact posterior is computable on a grid; compare its mean and std.
    m = rot_model(pixel_scale=2.0).eval()
    x = bars(2, angle=0.4)
    idata = to_inference_data(m, x, 1000, num_proposals=4000, seed=4)
    g = m.group
    grid = torch.linspace(-math.pi, math.pi, 1441)
    pose = m.infer_eta(x)
    log_post = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1].expand(len(grid), *SHAPE)
        warped = g.apply_chain(xi, [g.inverse(pose[i:i + 1].expand(len(grid), 1)), grid[:, None]])
        log_lik = dist.Normal(warped, m.pixel_scale).log_prob(xi).sum((1, 2, 3))
        log_post.append(log_lik + dist.Normal(PRIOR_LOC, PRIOR_SCALE).log_prob(grid))
    w = torch.softmax(torch.stack(log_post), dim=1).double()  # (N, grid)
    mean = (w * grid).sum(1)
    std = ((w * (grid - mean[:, None]) ** 2).sum(1)).sqrt()
    assert (std < 0.25).all()  # the likelihood really does narrow the prior (std 0.4)
    eta = idata.posterior["eta"].values[0, :, :, 0]  # (draw, image)
    ess = idata.sample_stats["importance_ess"].values
    assert (idata.sample_stats["pareto_k"].values < 0.7).all()
    np.testing.assert_allclose(eta.mean(0), mean.numpy(), atol=float(5 * std.max() / math.sqrt(ess.min())) + 0.01)
    np.testing.assert_allclose(eta.std(0), std.numpy(), rtol=0.15)
    # log_pseudo_marginal is the IWLB of the same model/guide pair (independent particles: MC error ~0.03).
    with m.param_scope():
        bound = sgm_pyro.iwlb(m.model, m.guide, x, num_samples=4000, chunk_size=2000)
    np.testing.assert_allclose(idata.sample_stats["log_pseudo_marginal"].values, bound.numpy(), atol=0.1)


@pytest.mark.filterwarnings("ignore:Pareto k-hat")  # 40 proposals per chain: k-hat is high, irrelevant here
def test_seeded_and_leaves_the_global_rng_alone():
    m = rot_model(pixel_scale=1.0)
    x = bars(2)
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    a = to_inference_data(m, x, 20, num_chains=2, seed=7, chunk_size=30)
    after = torch.rand(3)
    b = to_inference_data(m, x, 20, num_chains=2, seed=7, chunk_size=30)
    assert torch.equal(before, after)
    np.testing.assert_array_equal(a.posterior["eta"].values, b.posterior["eta"].values)
    np.testing.assert_array_equal(a.prior["eta"].values, b.prior["eta"].values)
    assert a.sample_stats["log_weight"].shape == (2, 80, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_samples=0), "num_samples"),
    (dict(num_samples=2.5), "num_samples"),
    (dict(num_chains=0), "num_chains"),
    (dict(num_proposals=-3), "num_proposals"),
    (dict(num_prior_samples=0), "num_prior_samples"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_inference_data(rot_model(), bars(1), **kwargs)


@pytest.mark.parametrize("x, match", [
    (torch.zeros(2, 1, 10, 10), "image shape"),
    (torch.zeros(2, 12, 12), "shape"),
    (torch.full((1, *SHAPE), 3.0), r"\[-1, 1\]"),
])
def test_bad_images_raise(x, match):
    with pytest.raises(ValueError, match=match):
        to_inference_data(rot_model(), x, 10)


def test_poor_proposal_warns_with_pareto_k():
    # A point-like guide (σ ≈ 3e-5 rad) against a wide posterior: the weights are dominated by the prior
    # tail, which PSIS flags, and the export says so instead of silently returning bad draws.
    m = rot_model(pixel_scale=1e4, sigma_init=1e-5)
    with pytest.warns(UserWarning, match="k-hat"):
        to_inference_data(m, bars(1), 50)


def test_non_sgm_model_raises():
    with pytest.raises(ValueError, match="SGM or InvVAE"):
        to_inference_data(object(), bars(1), 10)
