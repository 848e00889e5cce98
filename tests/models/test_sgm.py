"""The SGM Pyro programs and public API (SPEC 1, 4, 5)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints

import sgm_pyro
from sgm_pyro.inference import CheckpointError

SHAPE = (1, 12, 12)


def tiny_model(prior=None, **kw):
    g = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    return sgm_pyro.SGM(g, SHAPE, prior, inference_kwargs=kw.pop("inference_kwargs", dict(hidden=(16,))),
                        prior_kwargs=kw.pop("prior_kwargs", dict(feature_hidden=(16,), hidden=(16,))), **kw)


def bars(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = -torch.ones(n, *SHAPE)
    x[:, :, 5:7, 2:10] = 1
    rot = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    return rot.apply(x, rot.sample_uniform(n, generator=g))


def gaussian_user_prior(x_hat):
    loc = pyro.param("user_loc", torch.zeros(1))
    scale = pyro.param("user_scale", torch.ones(1), constraint=constraints.positive)
    return pyro.sample("eta", dist.Normal(loc, scale).expand([x_hat.shape[0], 1]).to_event(1))


def test_model_and_guide_sites_and_plates():
    m = tiny_model()
    x = bars(5)
    guide = poutine.trace(m.guide).get_trace(x)
    model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x)
    assert guide.nodes["eta"]["value"].shape == (5, 1)
    assert model.nodes["x"]["is_observed"] and model.nodes["x"]["fn"].event_shape == SHAPE
    assert model.nodes["eta"]["fn"].batch_shape == (5,) and "data" in model.nodes
    assert torch.isfinite(model.log_prob_sum()) and torch.isfinite(guide.log_prob_sum())


def test_guide_log_density_is_the_normal_of_spec_3():
    # Unsquashed box of half-width π: q(η | x) = N(π μ(x), π σ) wrapped onto the circle, a closed form
    # independent of the code (the reference head, whose μ is any real number).
    m = tiny_model(inference_kwargs=dict(hidden=(16,), sigma_init=0.2, rotation_head="real"))
    with torch.no_grad():
        m.inference.head[-1].weight.normal_(0, 0.5)  # a pose that depends on x
    x = bars(4)
    with pyro.plate("particles", 5, dim=-2):
        tr = poutine.trace(m.guide).get_trace(x)
    tr.compute_log_prob()
    eta = tr.nodes["eta"]["value"]
    pose = m.inference.mode(x)
    assert pose.std() > 0.01
    # a full-circle rotation: draws are wrapped into the box and q is the wrapped normal
    assert eta.abs().max() <= math.pi
    turns = torch.stack([dist.Normal(pose, math.pi * 0.2).log_prob(eta + 2 * math.pi * k) for k in range(-3, 4)])
    expected = torch.logsumexp(turns, 0).sum(-1)
    torch.testing.assert_close(tr.nodes["eta"]["log_prob"], expected, rtol=1e-5, atol=1e-4)


def test_vectorised_particles_broadcast_through_the_model():
    m = tiny_model()
    x = bars(3)
    with pyro.plate("particles", 7, dim=-2):
        guide = poutine.trace(m.guide).get_trace(x)
        model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x)
    assert guide.nodes["eta"]["value"].shape == (7, 3, 1)
    assert model.nodes["x"]["fn"].batch_shape == (7, 3)


def test_queries_shapes_and_pose_convention():
    m = tiny_model(inference_kwargs=dict(hidden=(16,), rotation_head="real")).eval()
    # A pose network that reads every image as turned by +0.7 rad (η = π · u on the unsquashed box).
    with torch.no_grad():
        m.inference.head[-1].bias.fill_(0.7 / math.pi)
    upright = -torch.ones(6, *SHAPE)
    upright[:, :, 5:7, 2:10] = 1
    x = m.group.apply(upright, torch.full((6, 1), 0.7))  # the upright bar really turned by 0.7
    eta = m.infer_eta(x)
    proto = m.prototype(x)
    assert eta.shape == (6, 1) and proto.shape == x.shape
    torch.testing.assert_close(eta, torch.full((6, 1), 0.7))
    # x ≈ T_η(prototype): the prototype undoes the pose (bilinear blur only), here back to upright.
    assert (proto - upright).abs().mean() < 0.1 and (x - upright).abs().mean() > 0.2
    assert m.sample_eta(proto, 4).shape == (4, 6, 1)
    assert m.log_prob_eta(eta, proto).shape == (6,)
    new = m.resample(x, 3)
    assert new.shape == (3, 6, *SHAPE) and new.min() >= -1 - 1e-5 and new.max() <= 1 + 1e-5


def test_user_prior_program_is_used_and_fitted_by_stage_two():
    torch.manual_seed(0)
    m = tiny_model(prior=gaussian_user_prior, inference_kwargs=dict(hidden=(16,), rotation_head="real"))
    x = bars(64)
    # With an untrained f_ω (the reference head, at the identity) the poses are q's noise: π · N(0, 0.01)
    # has standard deviation 0.0314.
    m.fit(x, inference_steps=0, prior_steps=150, batch_size=32, progress=False, prior_lr=0.05)
    proto = m.prototype(x)
    draws = m.sample_eta(proto, 2000)
    assert draws.shape == (2000, 64, 1)
    assert draws.std().item() == pytest.approx(math.pi * 0.01, rel=0.25)
    expected = dist.Normal(0.0, draws.std()).log_prob(torch.zeros(1))
    assert m.log_prob_eta(torch.zeros(64, 1), proto)[0].item() == pytest.approx(expected.item(), rel=0.05)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    m = tiny_model()
    x = bars(32)
    m.fit(x, inference_steps=3, prior_steps=3, batch_size=16, progress=False)
    m.save(tmp_path / "m.pt")
    m2 = sgm_pyro.SGM.load(tmp_path / "m.pt", map_location="cpu")
    assert torch.equal(m2.infer_eta(x), m.infer_eta(x))
    proto = m.prototype(x)
    assert torch.equal(m2.prototype(x), proto)
    assert torch.equal(m2.log_prob_eta(m.infer_eta(x), proto), m.log_prob_eta(m.infer_eta(x), proto))
    torch.manual_seed(5)
    a = m.resample(x, 2)
    torch.manual_seed(5)
    assert torch.equal(m2.resample(x, 2), a)
    assert m2.history["inference"]["loss"] == m.history["inference"]["loss"]


def test_user_prior_must_be_given_back_at_load(tmp_path):
    m = tiny_model(prior=gaussian_user_prior)
    m.save(tmp_path / "u.pt")
    with pytest.raises(ValueError, match="user-supplied prior"):
        sgm_pyro.SGM.load(tmp_path / "u.pt")
    assert sgm_pyro.SGM.load(tmp_path / "u.pt", prior=gaussian_user_prior).prior is gaussian_user_prior


def test_load_rejects_foreign_and_corrupt_files(tmp_path):
    m = tiny_model()
    m.save(tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        sgm_pyro.SGM.load(tmp_path / "cut.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an SGM checkpoint"):
        sgm_pyro.SGM.load(tmp_path / "other.pt")


class Crash(Exception):
    pass


def crash_on_call(fn, n):
    """Wrap ``fn`` so that its ``n``-th call raises, as if the process died there."""
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Crash
        return fn(*args, **kwargs)
    return wrapped


@pytest.mark.parametrize("where", ["stage1", "stage2"])
def test_resume_after_a_crash_matches_uninterrupted_run(tmp_path, monkeypatch, where):
    from sgm_pyro.inference import stage1, stage2
    x = bars(48)
    kw = dict(inference_steps=4, prior_steps=4, batch_size=16, progress=False, seed=3, checkpoint_every=2)
    torch.manual_seed(0)
    full = tiny_model()
    full.fit(x, checkpoint_dir=tmp_path / "full", **kw)
    with monkeypatch.context() as mp:
        if where == "stage1":
            mp.setattr(stage1, "gaussian_blur", crash_on_call(stage1.gaussian_blur, 4))  # dies in step 4
        else:
            mp.setattr(stage2, "reaugmented_pairs", crash_on_call(stage2.reaugmented_pairs, 4))
        torch.manual_seed(0)
        with pytest.raises(Crash):
            tiny_model().fit(x, checkpoint_dir=tmp_path / "run", **kw)
    torch.manual_seed(123)  # the global RNG state at restart must not matter
    resumed = tiny_model()
    resumed.fit(x, checkpoint_dir=tmp_path / "run", resume=True, **kw)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert resumed.history["prior"]["loss"] == full.history["prior"]["loss"]


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(4, 12, 12), "shape"),
    (torch.zeros(4, 1, 10, 10), "image shape"),
    (torch.full((4, 1, 12, 12), float("nan")), "NaN"),
    (torch.full((4, 1, 12, 12), 200.0), r"\[-1, 1\]"),
    (torch.zeros(4, 1, 12, 12, dtype=torch.uint8), "floating point"),
    (torch.zeros(0, 1, 12, 12), "empty"),
])
def test_bad_images_are_rejected(bad, match):
    m = tiny_model()
    with pytest.raises(ValueError, match=match):
        m.prototype(bad)


def test_bad_fit_arguments():
    m = tiny_model()
    x = bars(8)
    with pytest.raises(ValueError, match="larger than the dataset"):
        m.fit(x, inference_steps=1, prior_steps=1, batch_size=16, progress=False)
    with pytest.raises(ValueError, match="unknown option"):
        m.fit(x, inference_steps=1, prior_steps=1, batch_size=4, progress=False, learning_rate=1.0)
    with pytest.raises(ValueError, match="num_samples"):
        m.resample(x, 0)


def test_fit_accepts_a_callable_and_an_iterator():
    torch.manual_seed(0)
    m = tiny_model()
    h = m.fit(lambda n: bars(n), inference_steps=2, prior_steps=2, batch_size=4, progress=False)
    assert len(h["inference"]["loss"]) == 2 and len(h["prior"]["loss"]) == 2
    h = m.fit(iter([bars(4, seed=s) for s in range(4)]), inference_steps=2, prior_steps=2, batch_size=4,
              progress=False)
    assert len(h["prior"]["loss"]) == 2


def test_log_prob_eta_matches_monte_carlo():
    torch.manual_seed(0)
    m = tiny_model()
    x = bars(32)
    m.fit(x, inference_steps=2, prior_steps=20, batch_size=16, progress=False, prior_lr=0.02)
    proto = m.prototype(x[:3])
    draws = m.sample_eta(proto, 20000)[..., 0]  # (S, 3)
    lo, hi = -0.5, 0.3
    grid = torch.linspace(lo, hi, 801)
    for i in range(3):
        logp = m.log_prob_eta(grid[:, None], proto[i: i + 1].expand(len(grid), -1, -1, -1))
        exact = torch.trapezoid(logp.exp(), grid).item()
        frac = ((draws[:, i] > lo) & (draws[:, i] < hi)).float().mean().item()
        assert abs(frac - exact) < 4 * math.sqrt(exact * (1 - exact) / 20000) + 1e-3, (i, frac, exact)


def as_old_format(model, tmp_path, fmt, *dropped):
    """Save ``model`` as a file of format ``fmt`` that does not name ``dropped`` inference settings; load it."""
    from sgm_pyro.checkpoint import load_checkpoint, save_atomic

    model.save(tmp_path / "m.pt")
    ckpt = load_checkpoint(tmp_path / "m.pt")
    ckpt["format"] = f"sgm-pyro/SGM/{fmt}"
    for key in dropped:
        del ckpt["config"]["inference_kwargs"][key]
    save_atomic(ckpt, tmp_path / f"v{fmt}.pt")
    return sgm_pyro.SGM.load(tmp_path / f"v{fmt}.pt")


@pytest.mark.parametrize("head", ["real", "circle"])
def test_a_checkpoint_of_format_1_loads_with_the_head_it_was_written_with(tmp_path, head):
    # files written before the equivariant head became the default named no head: they used "real",
    # or "circle", which is recognised by its extra output (the first session's recovery files)
    old = tiny_model(inference_kwargs=dict(hidden=(16,), rotation_head=head))
    assert old.config()["inference_kwargs"]["rotation_head"] == head
    torch.nn.init.normal_(old.inference.head[-1].weight)  # away from the identity start
    loaded = as_old_format(old, tmp_path, 1, "rotation_head")
    assert loaded.inference.rotation_head == head
    x = bars(4)
    torch.testing.assert_close(loaded.infer_eta(x), old.eval().infer_eta(x))


def test_a_new_file_records_the_head_it_was_built_with(tmp_path):
    new = tiny_model()
    assert new.config()["inference_kwargs"]["rotation_head"] == "equivariant"  # the default, recorded
    new.save(tmp_path / "v2.pt")
    assert sgm_pyro.SGM.load(tmp_path / "v2.pt").inference.rotation_head == "equivariant"


def test_a_checkpoint_of_format_2_loads_with_the_reference_hue_head(tmp_path):
    group = sgm_pyro.ProductGroup(sgm_pyro.ColorGroup(offset=(0.5, 0, 0)), sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25)))
    old = sgm_pyro.SGM(group, (3, 8, 8), "box", inference_kwargs=dict(hidden=(16,), hue_head="real", colour_head="mlp"))
    loaded = as_old_format(old, tmp_path, 2, "hue_head", "colour_head")
    assert (loaded.inference.hue_head, loaded.inference.colour_head) == ("real", "mlp")
    new = sgm_pyro.SGM(group, (3, 8, 8), "box", inference_kwargs=dict(hidden=(16,)))
    assert new.config()["inference_kwargs"]["hue_head"] == "equivariant"  # the default, recorded
    new.save(tmp_path / "v3.pt")
    loaded = sgm_pyro.SGM.load(tmp_path / "v3.pt")
    assert loaded.inference.hue_head == "equivariant"
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(loaded.infer_eta(x), new.eval().infer_eta(x))


def test_a_checkpoint_of_format_4_loads_a_circle_head_that_was_given_harmonics(tmp_path):
    # before format 5 the circle head ignored rotation_harmonics silently; now they are refused, and an
    # old file that names them loads as it was trained
    old = tiny_model(inference_kwargs=dict(hidden=(16,), rotation_head="circle"))
    torch.nn.init.normal_(old.inference.head[-1].weight)
    ckpt_kwargs = old.config()["inference_kwargs"]
    ckpt_kwargs["rotation_harmonics"] = [4, 2, 1]
    old._config["inference_kwargs"] = ckpt_kwargs
    loaded = as_old_format(old, tmp_path, 4)
    assert loaded.inference.rotation_harmonics == (1,)
    x = bars(4)
    torch.testing.assert_close(loaded.infer_eta(x), old.eval().infer_eta(x))
    old.save(tmp_path / "v5.pt")
    with pytest.raises(ValueError, match="rotation_harmonics"):  # format 5 says what it asks for
        sgm_pyro.SGM.load(tmp_path / "v5.pt")


def test_a_checkpoint_of_format_3_loads_with_the_pose_networks_colour_outputs(tmp_path):
    # format 3 had no pixel-set colour head: log_sat and log_val came from the pose network
    group = sgm_pyro.ProductGroup(sgm_pyro.ColorGroup(offset=(0.5, 0, 0)), sgm_pyro.AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25)))
    old = sgm_pyro.SGM(group, (3, 8, 8), "box", inference_kwargs=dict(hidden=(16,), colour_head="mlp"))
    torch.nn.init.normal_(old.inference.head[-1].weight)
    loaded = as_old_format(old, tmp_path, 3, "colour_head")
    assert loaded.inference.colour_head == "mlp" and loaded.inference.colour is None
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(loaded.infer_eta(x), old.eval().infer_eta(x))
    new = sgm_pyro.SGM(group, (3, 8, 8), "box", inference_kwargs=dict(hidden=(16,)))
    assert new.config()["inference_kwargs"]["colour_head"] == "set"  # the default, recorded
