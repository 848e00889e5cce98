"""Device paths without a GPU: the ``meta`` device stands for CUDA, and ``torch.cuda`` is mocked where needed.

A tensor on ``meta`` has a shape and a device but no data: any code that would mix it with CPU
tensors, or read its values, fails exactly where CUDA tensors would.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

import sgm_pyro
from sgm_pyro.experiments import dsprites_report as report_module
from sgm_pyro.inference import distributed, fit_sgm, sgm_training
from sgm_pyro.inference.checkpoint import save_atomic

META = torch.device("meta")


def rot_prior(x_hat):
    """The README's user-written prior: a free pyro.param created with a CPU initial value."""
    scale = pyro.param("rot_scale", torch.ones(1), constraint=constraints.positive)
    return pyro.sample("eta", dist.Normal(0.0, scale).expand([x_hat.shape[0], 1]).to_event(1))


def tiny_sgm(prior=None) -> sgm_pyro.SGM:
    torch.manual_seed(0)
    group = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    return sgm_pyro.SGM(group, (1, 8, 8), prior, inference_kwargs={"hidden": [8]},
                        prior_kwargs={} if prior is not None else {"feature_hidden": [8], "hidden": [8]})


def images(n: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1


def all_tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from all_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from all_tensors(v)


@pytest.mark.parametrize("stage_steps", [(2, 0), (2, 2)], ids=["in stage 1", "in stage 2"])
def test_resume_on_another_device_keeps_rng_states_and_adam_steps_on_the_cpu(tmp_path, monkeypatch, stage_steps):
    """Loading with map_location=device moved the RNG states there: torch.set_rng_state raised TypeError."""
    inference_steps, prior_steps = stage_steps
    kw = dict(inference_steps=inference_steps, prior_steps=prior_steps, batch_size=8, progress=False,
              checkpoint_dir=tmp_path)
    fit_sgm(tiny_sgm(), images(), **kw)
    written = []
    monkeypatch.setattr(sgm_training, "save_atomic", lambda obj, path: written.append(obj))
    model = tiny_sgm()
    fit_sgm(model, images(), device="meta", resume=True, **kw)  # the finished stage: restore, then write
    assert model.device == META
    stage = written[-1]["stage"]
    assert stage["rng"]["cpu"].device.type == "cpu" and stage["rng"]["cpu"].dtype == torch.uint8
    optimiser = stage["optimizer"]
    steps = [s["step"] for s in (optimiser["state"].values() if "state" in optimiser
                                 else optimiser["params"].values())]
    assert steps and all(s.device.type == "cpu" for s in steps)


class OnDevice(torch.Tensor):
    """A tensor that stands for one on a GPU: it becomes a plain tensor only through ``.cpu()``."""

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()


def test_checkpoints_are_saved_as_plain_cpu_tensors(tmp_path):
    """SGM.save on a GPU stored CUDA tensors; a CPU-only machine then called the file unreadable."""
    weights = torch.arange(3.0).as_subclass(OnDevice)
    save_atomic({"state_dict": {"w": weights}, "rng": [weights]}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # refuses unknown tensor classes
    assert type(loaded["state_dict"]["w"]) is torch.Tensor and loaded["rng"][0].device.type == "cpu"
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))


def test_load_onto_a_device_builds_on_the_cpu_then_moves_free_params_too(tmp_path):
    model = tiny_sgm(rot_prior)
    model.fit(images(), inference_steps=1, prior_steps=2, batch_size=8, progress=False)
    model.save(tmp_path / "model.pt")
    on_device = sgm_pyro.SGM.load(tmp_path / "model.pt", map_location="meta", prior=rot_prior)
    assert on_device.device == META
    assert on_device.pyro_param_state["params"]["rot_scale"].device == META
    back = sgm_pyro.SGM.load(tmp_path / "model.pt", prior=rot_prior)  # the CPU by default
    assert back.pyro_param_state["params"]["rot_scale"].device.type == "cpu"


def test_to_moves_the_free_pyro_params_of_a_users_prior():
    model = tiny_sgm(rot_prior)
    model.fit(images(), inference_steps=1, prior_steps=2, batch_size=8, progress=False)
    model.to(torch.float64)
    param = model.pyro_param_state["params"]["rot_scale"]
    assert param.dtype == torch.float64 and param.requires_grad and param.is_leaf
    model.to("meta")
    assert model.pyro_param_state["params"]["rot_scale"].device == META


def test_a_new_pyro_param_is_created_on_the_models_device(monkeypatch):
    """The README's prior creates rot_scale from torch.ones(1), a CPU tensor, which then met CUDA eta."""
    monkeypatch.setattr(torch.distributions.Distribution, "_validate_args", False)  # argument checks read meta values
    model = tiny_sgm(rot_prior).to("meta")
    with model.param_scope():
        with pyro.plate("data", 3):
            eta = rot_prior(torch.zeros(3, 1, 8, 8, device=META))
        assert pyro.param("rot_scale").device == META
    assert eta.device == META and model.pyro_param_state["params"]["rot_scale"].device == META


def test_prior_params_returns_the_constrained_fitted_values():
    model = tiny_sgm(rot_prior)
    model.fit(images(), inference_steps=2, prior_steps=20, batch_size=8, progress=False,
              prior_lr=0.05, prior_warmup_fraction=0.0)
    fitted = model.prior_params()
    unconstrained = model.pyro_param_state["params"]["rot_scale"]
    torch.testing.assert_close(fitted["rot_scale"], unconstrained.exp())  # positive: exp of the stored log
    assert fitted["rot_scale"].item() > 0 and abs(fitted["rot_scale"].item() - 1.0) > 1e-3  # it was fitted
    with model.param_scope():
        torch.testing.assert_close(pyro.param("rot_scale"), fitted["rot_scale"])
    assert tiny_sgm().prior_params() == {}


def test_cuda_generator_state_is_saved_and_restored(monkeypatch):
    """The CUDA generator used to restart from the seed on every resume (all ranks the same draws)."""
    fake = torch.arange(16, dtype=torch.uint8)
    restored, seeded = [], []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: fake.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: restored.append((state, device)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: seeded.append(seed))
    cuda = torch.device("cuda", 0)
    snapshot = {"step": 4, **distributed.rng_snapshot(cuda)}
    assert torch.equal(snapshot["rng"]["cuda"], fake) and snapshot["rng"]["cpu"].dtype == torch.uint8
    distributed.restore_rank_rng(snapshot, seed=0, device=cuda)
    assert len(restored) == 1 and torch.equal(restored[0][0], fake) and restored[0][1] == cuda
    # a checkpoint written on the CPU and resumed on a GPU: the CUDA generator is seeded, not left as is
    distributed.restore_rank_rng({"step": 4, "rng": torch.get_rng_state()}, seed=0, device=cuda)
    assert len(restored) == 1 and len(seeded) == 1


@pytest.fixture
def torchrun_env(monkeypatch):
    calls = []
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)  # no process group is started
    return calls


def test_an_explicit_gpu_index_under_torchrun_is_refused(torchrun_env, monkeypatch):
    """--device cuda:0 under torchrun put every rank on GPU 0."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="every rank would train on that one GPU"):
        distributed.init_distributed("cuda:0")
    assert distributed.init_distributed("cuda") == torch.device("cuda", 1)
    assert torchrun_env == [torch.device("cuda", 1)]


def test_a_rank_without_a_gpu_of_its_own_gets_a_clear_error(torchrun_env, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="sees 1 GPU"):
        distributed.init_distributed("cuda")
    assert torchrun_env == []


def test_dsprites_report_draws_its_views_on_the_models_device(monkeypatch, tmp_path):
    """The generator was built on the data's device: CPU images and a GPU model could not meet."""
    seen = {}
    real_generator = torch.Generator

    class Stop(Exception):
        pass

    def generator(device="cpu"):  # meta has no generators: record the device asked for, draw on the CPU
        seen["generator"] = torch.device(device)
        return real_generator()

    def capture(model, x, labels, *, scale, generator):
        seen.update(x=x.device, model=model.device)
        raise Stop
    monkeypatch.setattr(torch, "Generator", generator)
    monkeypatch.setattr(report_module, "invariance_metrics", capture)
    model = tiny_sgm().to("meta")
    with pytest.raises(Stop):  # CPU data, a model elsewhere
        report_module.dsprites_report(model, images(6), {"shape": torch.zeros(6, dtype=torch.long)}, tmp_path)
    assert seen["generator"] == seen["model"] == seen["x"] == META
