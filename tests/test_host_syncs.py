"""Host syncs per training step and per IWLB chunk, counted on the CPU (each is a blocking wait on a GPU).

Counts are differences between a longer and a shorter run, so the one-off checks of user input
at the public boundary and in the first step do not count against the per-step budget.
"""

import math

import pyro
import pytest
import torch
from sync_counter import SyncCounter

import sgm_pyro
from sgm_pyro.inference import InferenceConfig, PriorConfig, fit_inference, fit_prior, iwlb
from sgm_pyro.inference import particle_rng

SHORT, LONG = 3, 9
BUDGET = 2  # host syncs per step (issue 13)


def tiny_model() -> sgm_pyro.SGM:
    torch.manual_seed(0)
    group = sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25))
    return sgm_pyro.SGM(group, (1, 8, 8), inference_kwargs={"hidden": [16]},
                        prior_kwargs={"feature_hidden": [16], "hidden": [16]})


def images(n: int = 48) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def syncs(fn) -> SyncCounter:
    with SyncCounter() as counter:
        fn()
    return counter


def per_step(run) -> tuple[float, str]:
    """Syncs per step from ``run(steps)``, and where the longer run's syncs came from."""
    short, long = syncs(lambda: run(SHORT)), syncs(lambda: run(LONG))
    return (long.count - short.count) / (LONG - SHORT), long.report()


@pytest.mark.parametrize("log_every", [1, 50])
def test_stage1_step_makes_at_most_two_host_syncs(log_every):
    model, x = tiny_model(), images()

    def run(steps):
        fit_inference(model.inference, x, InferenceConfig(steps=steps, batch_size=16, log_every=log_every),
                      progress=False)
    rate, where = per_step(run)
    assert rate <= BUDGET, where
    # and the losses of every step are still in the history, read in bulk
    history = fit_inference(model.inference, x, InferenceConfig(steps=5, batch_size=16, log_every=log_every),
                            progress=False)
    assert history["step"] == list(range(5)) and all(math.isfinite(v) for v in history["loss"])
    # the equivariant head's canonicalisation prior, weighed by the poses' concentration, is logged the same way
    assert len(history["upright_weight"]) == 5 and all(0.2 <= w <= 3.0 for w in history["upright_weight"])


def test_a_stage1_step_with_the_moment_head_makes_at_most_two_host_syncs():
    """The moment angle (its order and branch picked by ``torch.where``, not by indexing) adds no read.

    (The 2x2 inverses are closed forms rather than ``torch.linalg`` calls, whose error checks read the
    device on a GPU; a CPU count cannot see those checks, so this test does not cover them.)"""
    torch.manual_seed(0)
    group = sgm_pyro.AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=True)
    net = sgm_pyro.PrototypeInference(group, (1, 8, 8), hidden=(16,), rotation_head="moments")
    x = images()

    def run(steps):
        fit_inference(net, x, InferenceConfig(steps=steps, batch_size=16, log_every=50), progress=False)
    rate, where = per_step(run)
    assert rate <= BUDGET, where


@pytest.mark.parametrize("log_every", [1, 50])
def test_stage2_step_makes_at_most_two_host_syncs(log_every):
    model, x = tiny_model(), images()

    def run(steps):
        fit_prior(model.prior, model.inference, x, PriorConfig(steps=steps, batch_size=16, log_every=log_every),
                  progress=False, param_scope=model.param_scope)
    rate, where = per_step(run)
    assert rate <= BUDGET, where


def test_building_the_flow_computes_no_coupling_indices():
    """zuko's coupling layer used to call mask.nonzero() (a sync) per layer each time the flow was built."""
    model = tiny_model()
    x_hat = images(4)
    counter = syncs(lambda: model.prior.distribution(x_hat))
    assert "aten.nonzero.default" not in counter.ops, counter.report()


@pytest.mark.parametrize("seed", [None, 3])
def test_iwlb_chunk_makes_at_most_two_host_syncs(seed):
    model, x = tiny_model(), images(4)

    def bound(k):
        return iwlb(model.model, model.guide, x, num_samples=k, chunk_size=5, seed=seed)
    few, many = syncs(lambda: bound(10)), syncs(lambda: bound(30))  # 2 chunks, then 6
    assert (many.count - few.count) / 4 <= BUDGET, many.report()


def test_seeded_iwlb_samples_the_guide_once_per_chunk_and_matches_one_particle_at_a_time(monkeypatch):
    model, x = tiny_model(), images(4)
    calls = []

    def guide(x):
        calls.append(1)
        return model.guide(x)
    bound, log_w = iwlb(model.model, guide, x, num_samples=12, chunk_size=6, seed=5, return_log_weights=True)
    assert len(calls) == 1 + 2  # the inspecting trace, then one vectorised pass per chunk

    def refuse(*args, **kwargs):  # force the fallback: one guide pass per particle
        raise particle_rng.UnsupportedDraw("forced")
    monkeypatch.setattr(particle_rng.ParticleStreams, "__enter__", refuse)
    calls.clear()
    slow_bound, slow_log_w = iwlb(model.model, guide, x, num_samples=12, chunk_size=6, seed=5,
                                  return_log_weights=True)
    assert len(calls) == 1 + 2 * (6 + 1)  # per chunk: 6 single-particle passes and a replay
    # the same draws; only float32 rounding of the batched networks differs (log weights of order 10-100)
    torch.testing.assert_close(log_w, slow_log_w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bound, slow_bound, rtol=1e-5, atol=1e-5)


def test_particle_streams_give_each_particle_its_own_seeded_draws():
    seeds = [11, 12, 13]
    with particle_rng.ParticleStreams(seeds):
        eps = torch.randn(3, 4, 5)
        u = torch.empty(3, 7).uniform_()
        like = torch.randn_like(torch.zeros(3, 2))
    for k, s in enumerate(seeds):
        g = torch.Generator().manual_seed(s)
        assert torch.equal(eps[k], torch.randn(4, 5, generator=g))
        assert torch.equal(u[k], torch.empty(7).uniform_(generator=g))  # the same stream continues
        assert torch.equal(like[k], torch.randn(2, generator=g))
    for unsplittable in (lambda: torch.randn(4, 3),  # no leading particle dim
                         lambda: torch.bernoulli(torch.full((3, 2), 0.5))):  # a kernel it does not split
        with pytest.raises(particle_rng.UnsupportedDraw):
            with particle_rng.ParticleStreams(seeds):
                unsplittable()


def test_value_checks_are_on_in_the_first_step_only_and_the_callers_settings_come_back():
    model, x = tiny_model(), images()
    seen = []

    def prior(x_hat):  # records whether Pyro validates this call
        seen.append(pyro.infer.util.is_validation_enabled())
        loc = pyro.param("loc", torch.zeros(5))
        return pyro.sample("eta", pyro.distributions.Normal(loc, 1.0).expand([x_hat.shape[0], 5]).to_event(1))
    torch_before = torch.distributions.Distribution._validate_args
    with model.param_scope():
        fit_prior(prior, model.inference, x, PriorConfig(steps=4, batch_size=16), progress=False)
    assert seen == [True, False, False, False]
    assert pyro.infer.util.is_validation_enabled() and sgm_pyro.groups.base._VALUE_CHECKS
    assert torch.distributions.Distribution._validate_args == torch_before
