"""iwlb on probabilistic PCA, whose log p(x) is known in closed form.

x = W z + mu + eps,  z ~ N(0, I_L),  eps ~ N(0, s^2 I_D)   =>   x ~ N(mu, W W^T + s^2 I).
The exact posterior is q*(z | x) = N(M^-1 W^T (x - mu), s^2 M^-1) with M = W^T W + s^2 I.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from sgm_pyro.inference.iwlb import iwlb

L, D, S, N = 2, 5, 0.5, 200


def ppca_problem() -> dict[str, torch.Tensor]:
    """Data, parameters, exact log p(x) and exact posterior of the PPCA model (also used by the ArviZ tests)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, L, generator=g)
    mu = torch.randn(D, generator=g)
    z = torch.randn(N, L, generator=g)
    x = z @ w.T + mu + S * torch.randn(N, D, generator=g)
    cov = w @ w.T + S**2 * torch.eye(D)
    log_px = dist.MultivariateNormal(mu, cov).log_prob(x)
    m_inv = torch.linalg.inv(w.T @ w + S**2 * torch.eye(L))
    return {"w": w, "mu": mu, "x": x, "log_px": log_px, "m_inv": m_inv, "post_cov": S**2 * m_inv}


@pytest.fixture(scope="module")
def ppca() -> dict[str, torch.Tensor]:
    return ppca_problem()


def post_loc(p, x):
    return (x - p["mu"]) @ p["w"] @ p["m_inv"]  # (N, L); m_inv is symmetric


def make_model(p):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ p["w"].T + p["mu"], S).to_event(1), obs=x)

    return model


def exact_guide(p):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(post_loc(p, x), p["post_cov"]))

    return guide


def rough_guide(p):
    """A deliberately imperfect mean-field guide: shrunk, shifted mean and inflated scales."""
    scale = p["post_cov"].diagonal().sqrt() * 1.3

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.9 * post_loc(p, x) + 0.05, scale).to_event(1))

    return guide


def test_exact_posterior_gives_log_px_with_one_sample(ppca):
    bound = iwlb(make_model(ppca), exact_guide(ppca), ppca["x"], num_samples=1, seed=0)
    assert bound.shape == (N,)
    torch.testing.assert_close(bound, ppca["log_px"], atol=1e-4, rtol=0)


def test_bound_is_below_log_px_and_tightens_with_k(ppca):
    model, guide, x = make_model(ppca), rough_guide(ppca), ppca["x"]
    pyro.set_rng_seed(1)  # the global-RNG path: faster than per-particle seeding
    means = [iwlb(model, guide, x, num_samples=k).mean().item() for k in (1, 10, 1000)]
    log_px = ppca["log_px"].mean().item()
    gap1 = log_px - means[0]
    assert gap1 > 0.2, "the rough guide should leave a visible gap at K=1"
    assert means[0] < means[1] < means[2] <= log_px + 0.01
    assert log_px - means[2] < 0.05 * gap1  # large K closes almost all of the gap
    # Per datapoint: below log p(x) up to Monte Carlo error, the delta-method standard error
    # of log(mean w), i.e. std(w) / (sqrt(K) mean(w)), estimated from the weights themselves.
    k = 1000
    bound, log_w = iwlb(model, guide, x, num_samples=k, return_log_weights=True)
    w = torch.exp(log_w - log_w.max(0).values)
    std_err = w.std(0) / (w.mean(0) * math.sqrt(k))
    assert (bound <= ppca["log_px"] + 4 * std_err + 1e-4).all()


def test_agrees_with_renyi_elbo_alpha_zero(ppca):
    model, guide, x = make_model(ppca), rough_guide(ppca), ppca["x"]
    k = 200
    pyro.set_rng_seed(0)
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True)
    # RenyiELBO's loss is minus the bound summed over the data plate.
    renyi_mean = -renyi.loss(model, guide, x) / x.shape[0]
    ours = iwlb(model, guide, x, num_samples=k).mean().item()
    assert renyi_mean == pytest.approx(ours, abs=0.02)


def test_chunking_does_not_change_a_seeded_result(ppca):
    model, guide, x = make_model(ppca), rough_guide(ppca), ppca["x"]
    full, lw_full = iwlb(model, guide, x, num_samples=60, seed=7, return_log_weights=True)
    for chunk in (1, 7, 32):
        part, lw = iwlb(
            model, guide, x, num_samples=60, chunk_size=chunk, seed=7, return_log_weights=True
        )
        torch.testing.assert_close(part, full, atol=1e-5, rtol=0)
        torch.testing.assert_close(lw, lw_full, atol=1e-5, rtol=0)
    # particles of a shorter run are a prefix of a longer one
    _, lw_short = iwlb(model, guide, x, num_samples=10, seed=7, return_log_weights=True)
    torch.testing.assert_close(lw_short, lw_full[:10], atol=1e-5, rtol=0)


def test_every_log_weight_of_the_exact_posterior_is_log_px(ppca):
    # w = p(x, z) / p(z | x) = p(x) for every z: each returned log weight is the closed form itself.
    _, lw = iwlb(make_model(ppca), exact_guide(ppca), ppca["x"], num_samples=30, chunk_size=8,
                 return_log_weights=True)
    assert lw.shape == (30, N)
    torch.testing.assert_close(lw, ppca["log_px"].expand(30, N), atol=1e-4, rtol=0)
    # A rough guide's weights scatter around it, on both sides (E[w] = p(x), not every w).
    _, rough = iwlb(make_model(ppca), rough_guide(ppca), ppca["x"], num_samples=30, return_log_weights=True)
    above = (rough > ppca["log_px"]).float().mean()
    assert 0.05 < above < 0.95


def test_seed_leaves_global_rng_untouched(ppca):
    state = torch.get_rng_state()
    iwlb(make_model(ppca), rough_guide(ppca), ppca["x"], num_samples=5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_five_thousand_samples_run_in_chunks(ppca):
    x = ppca["x"][:4]
    bound = iwlb(make_model(ppca), rough_guide(ppca), x, num_samples=5000, chunk_size=1000)
    assert bound.shape == (4,) and torch.isfinite(bound).all()
    torch.testing.assert_close(bound, ppca["log_px"][:4], atol=0.05, rtol=0)


def test_data_plate_at_another_dim_with_nested_plate(ppca):
    """Data plate at dim -2 with an inner feature plate: the dims are summed correctly."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 1, L), 1.0).to_event(1))
            mean = (z @ ppca["w"].T).squeeze(-2) + ppca["mu"]
            with pyro.plate("features", D, dim=-1):
                pyro.sample("x", dist.Normal(mean, S), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            loc = post_loc(ppca, x).unsqueeze(-2)
            pyro.sample("z", dist.MultivariateNormal(loc, ppca["post_cov"]))

    for k in (1, 3):
        bound = iwlb(model, guide, ppca["x"], num_samples=k, chunk_size=2)
        torch.testing.assert_close(bound, ppca["log_px"], atol=1e-4, rtol=0)


def test_global_latent_is_rejected(ppca):
    def model(x):
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(b, 1.0).expand([D]).to_event(1), obs=x)

    def guide(x):
        pyro.sample("b", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'b' is outside the plate 'data'"):
        iwlb(model, guide, ppca["x"], num_samples=2)


def test_missing_and_extra_guide_sites_are_named(ppca):
    def empty_guide(x):
        pass

    with pytest.raises(ValueError, match="latent site 'z'"):
        iwlb(make_model(ppca), empty_guide, ppca["x"], num_samples=2)

    def extra_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(L), 1.0).to_event(1))
            pyro.sample("u", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'u'"):
        iwlb(make_model(ppca), extra_guide, ppca["x"], num_samples=2)


def test_wrong_plate_name_and_bad_sizes(ppca):
    model, guide, x = make_model(ppca), rough_guide(ppca), ppca["x"]
    with pytest.raises(ValueError, match="outside the plate 'batch'"):
        iwlb(model, guide, x, num_samples=2, data_plate="batch")
    with pytest.raises(ValueError, match="num_samples"):
        iwlb(model, guide, x, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        iwlb(model, guide, x, num_samples=3, chunk_size=0)


def test_subsampled_data_plate_is_rejected(ppca):
    def model(x):
        with pyro.plate("data", 100, subsample=x):
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([D]).to_event(1), obs=x)

    with pytest.raises(ValueError, match="scale"):
        iwlb(model, lambda x: None, ppca["x"], num_samples=2)


def test_no_grad_by_default_and_grad_on_request(ppca):
    loc = torch.zeros(L, requires_grad=True)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))

    assert not iwlb(make_model(ppca), guide, ppca["x"], num_samples=3).requires_grad
    bound = iwlb(make_model(ppca), guide, ppca["x"], num_samples=3, grad=True)
    bound.sum().backward()
    assert loc.grad is not None and torch.isfinite(loc.grad).all()
