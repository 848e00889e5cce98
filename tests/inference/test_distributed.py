"""Data-parallel training over 2 CPU processes (gloo) matches one process with the doubled batch.

The test starts two copies of this file as ranks 0 and 1 with the environment torchrun would set
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``); each runs :func:`worker`
and saves its results, which are compared with runs of one process in the test itself.

For the comparison the random draws inside the losses must not depend on the batch a datapoint
lands in, so those runs use a test hook (:func:`deterministic_draws`): poses are the mean of
q(η|x) and the random views are fixed values, the same for every image. Everything else (batches,
sharding, gradient averaging, clipping, AdamW, schedules, validation, best-state restore) runs as
in production. The resume test uses real random draws: a 2-process run killed mid-stage and
resumed equals an uninterrupted 2-process run exactly.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

from sgm_pyro import cli
from sgm_pyro.groups import AffineGroup
from sgm_pyro.inference import fit_sgm, fit_vae
from sgm_pyro.inference.step_log import StepLog
from sgm_pyro.inference.batches import TensorBatches
from sgm_pyro.inference.distributed import rank_seed, shard_range
from sgm_pyro.inference.iwlb import iwlb, iwlb_distributed
from sgm_pyro.models import SGM
from sgm_pyro.models.prototype import PrototypeInference

B, STEPS = 4, 3  # per-rank batch and steps of the equivalence runs; one process gets batch 2B


# ------------------------------------------------------------------------------ shared set-up
def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def make_sgm() -> SGM:
    torch.manual_seed(0)
    group = AffineGroup(bounds=(0.25, math.pi), generators=("tx", "rot"))
    return SGM(group, (1, 8, 8), inference_kwargs={"hidden": [16]},
               prior_kwargs={"feature_hidden": [16], "hidden": [16], "transforms": 1, "dropout": 0.0})


class TinyVAE(PyroModule):
    """A linear VAE on 8x8 images; ``noisy=False`` makes the guide a point mass (a deterministic ELBO)."""

    def __init__(self, noisy: bool = False) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.image_shape, self.noisy = (1, 8, 8), noisy
        self.enc = PyroModule[nn.Linear](64, 2)
        self.dec = PyroModule[nn.Linear](2, 64)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            loc = self.dec(z).view(z.shape[:-1] + x.shape[1:])  # (particles, N, C, H, W) under iwlb
            pyro.sample("x", dist.Normal(loc, 0.5).to_event(3), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = self.enc(x.flatten(1))
            pyro.sample("z", dist.Normal(loc, 0.3).to_event(1) if self.noisy else dist.Delta(loc, event_dim=1))


@contextmanager
def deterministic_draws():
    """Test hook: q(η|x) returns its mean and ``sample_uniform`` alternates two fixed views."""
    saved = PrototypeInference.rsample, AffineGroup.sample_uniform
    calls = [0]

    def fixed_views(self, n, scale=1.0, generator=None):
        calls[0] += 1
        u = torch.tensor([0.3, -0.6] if calls[0] % 2 else [-0.5, 0.8], dtype=self.bounds.dtype)
        return (self.offset + scale * self.bounds * u).expand(n, self.dim)

    PrototypeInference.rsample = lambda self, x, num_samples=None: self.group.to_box(self.mean_unconstrained(x))
    AffineGroup.sample_uniform = fixed_views
    try:
        yield
    finally:
        PrototypeInference.rsample, AffineGroup.sample_uniform = saved


def equivalence_runs(batch_size: int) -> dict:
    """The SGM (both stages) and the VAE trained with deterministic draws, and a seeded IWLB."""
    x, val = images(32, 0), images(8, 1)
    with deterministic_draws():
        model = make_sgm()
        fit_sgm(model, x, inference_steps=STEPS, prior_steps=STEPS, batch_size=batch_size, val_images=val,
                progress=False, inference_val_every=2, prior_val_every=1)
    vae = TinyVAE()
    vae_history = fit_vae(vae, x, steps=STEPS, batch_size=batch_size, val_images=val, val_every=1, progress=False)
    noisy = TinyVAE(noisy=True)
    bound = iwlb_distributed(noisy.model, noisy.guide, images(11, 2), batch_size=3, num_samples=16, seed=5)
    return {"sgm": model.state_dict(), "sgm_history": model.history, "sgm_init": make_sgm().state_dict(),
            "vae": vae.state_dict(), "vae_history": vae_history, "vae_init": TinyVAE().state_dict(), "iwlb": bound}


class Crash(RuntimeError):
    """Raised on every rank at the same step to simulate a killed run."""


@contextmanager
def crash_at(stage: str, at_step: int):
    real = StepLog.append

    def append(self, step, values):  # every step's values pass here, after its optimiser step
        if self.stage == stage and step == at_step:
            raise Crash(f"{stage} step {step}")
        real(self, step, values)
    StepLog.append = append
    try:
        yield
    finally:
        StepLog.append = real


def resume_runs(out: Path) -> dict:
    """Real random draws: uninterrupted, and killed after checkpoint 2 of stage 1 or 2 then resumed."""
    x = images(32, 3)
    kw = dict(inference_steps=4, prior_steps=4, batch_size=B, val_images=images(8, 4), progress=False,
              checkpoint_every=2, seed=7, prior_val_every=2)
    results = {}
    for name, crash in (("full", None), ("stage 1", ("stage 1", 2)), ("stage 2", ("stage 2", 2))):
        run_dir = out / name.replace(" ", "")
        if crash is not None:
            with crash_at(*crash), pytest.raises(Crash):
                fit_sgm(make_sgm(), x, checkpoint_dir=run_dir, **kw)
            torch.distributed.barrier()
            results[name + " checkpoint"] = torch.load(run_dir / "checkpoint.pt", weights_only=True)["stage"]
        model = make_sgm()
        fit_sgm(model, x, checkpoint_dir=run_dir, resume=crash is not None, **kw)
        results[name] = model.state_dict()
    return results


def worker(out: Path) -> None:
    """One rank: joins the group from torchrun-style variables, runs everything, saves the results."""
    from sgm_pyro.inference.distributed import close_distributed, get_rank, init_distributed
    torch.set_default_dtype(torch.float64)  # no float32 round-off between the 1- and 2-process sums
    init_distributed("cpu")
    results = equivalence_runs(B)
    results["resume"] = resume_runs(out)  # the run folders are shared, as on one machine or a shared file system
    torch.save(results, out / f"rank{get_rank()}.pt")
    close_distributed()


# ------------------------------------------------------------------------------ the tests
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Results of ranks 0 and 1 (started first), and of one process with batch 2B (run meanwhile)."""
    out = tmp_path_factory.mktemp("ranks")
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, str(out)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    torch.set_default_dtype(torch.float64)
    try:
        single = equivalence_runs(2 * B)
        for p in procs:
            log, _ = p.communicate(timeout=240)
            assert p.returncode == 0, log
    finally:
        torch.set_default_dtype(torch.float32)
        for p in procs:  # a rank whose partner failed would wait in a collective: end it
            if p.poll() is None:
                p.kill()
                p.wait()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)], single, out


def assert_close_dicts(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=lambda m: f"{k}: {m}", **tol)


def test_two_ranks_of_batch_b_train_like_one_process_of_batch_2b(two_ranks):
    (r0, r1), single, _ = two_ranks
    for key in ("sgm", "vae"):
        for k in r0[key]:
            assert torch.equal(r0[key][k], r1[key][k]), f"replicas differ in {key}.{k}"
        assert_close_dicts(r0[key], single[key], rtol=1e-9, atol=1e-11)
        init = single[key + "_init"]
        moved = [k for k in init if init[k].is_floating_point() and (single[key][k] - init[k]).abs().max() > 1e-4]
        assert len(moved) >= 4, f"training barely moved {key}: the comparison would be vacuous"
    # the logged losses (and validation choices) are those of the whole (2B) batch, on every rank
    def histories(res):
        return [res["sgm_history"]["inference"], res["sgm_history"]["prior"], res["vae_history"]]
    for r in (r0, r1):
        for got, ref in zip(histories(r), histories(single)):
            for key in ("loss", "val_step", "best_step"):
                if key in ref:
                    torch.testing.assert_close(torch.tensor(got[key], dtype=torch.float64),
                                               torch.tensor(ref[key], dtype=torch.float64), rtol=1e-6, atol=1e-8)


def test_iwlb_gathered_over_two_ranks_equals_one_process(two_ranks):
    (r0, r1), single, _ = two_ranks
    assert r0["iwlb"].shape == (11,)
    assert torch.equal(r0["iwlb"], single["iwlb"]) and torch.equal(r1["iwlb"], single["iwlb"])
    torch.set_default_dtype(torch.float64)
    try:
        vae, x = TinyVAE(noisy=True), images(11, 2)
        blocks = [iwlb(vae.model, vae.guide, x[i: i + 3], num_samples=16, seed=5 + i) for i in range(0, 11, 3)]
    finally:
        torch.set_default_dtype(torch.float32)
    assert torch.equal(single["iwlb"], torch.cat(blocks))


def test_two_rank_run_killed_mid_stage_resumes_exactly(two_ranks):
    (r0, r1), _, out = two_ranks
    for r in (r0, r1):
        res = r["resume"]
        for stage in ("stage 1", "stage 2"):
            assert res[stage + " checkpoint"]["step"] == 2
            assert len(res[stage + " checkpoint"]["rank_rng"]) == 2  # every rank's RNG state, written by rank 0
            for k, v in res["full"].items():
                assert torch.equal(res[stage][k], v), f"resumed after a {stage} crash: {k} differs"
    for k in r0["resume"]["full"]:
        assert torch.equal(r0["resume"]["full"][k], r1["resume"]["full"][k])
    assert sorted(p.name for p in (out / "full").iterdir()) == ["checkpoint.pt"]


def test_batches_shard_the_global_batch_and_seeds_differ_per_rank():
    x = torch.arange(20.0).view(20, 1, 1, 1)
    one = TensorBatches(x, 6, seed=3)
    ranks = [TensorBatches(x, 3, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(7):  # crosses epochs: 20 images hold 3 global batches of 6
        assert torch.equal(next(one), torch.cat([next(b) for b in ranks]))
    with pytest.raises(ValueError, match="x 2 processes"):
        TensorBatches(x, 11, rank=0, world_size=2)
    assert rank_seed(5, 0) == 5 and len({rank_seed(s, r) for s in range(4) for r in range(4)}) == 16
    assert [list(shard_range(5, r, 2)) for r in range(2)] == [[0, 1], [2, 3, 4]]


def test_sgm_fit_under_torchrun_trains_on_two_processes_and_rank0_writes_the_run(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test_config import tiny_config, write_tiny_data

    from sgm_pyro.config import save_config
    config = save_config(tiny_config(write_tiny_data(tmp_path / "bars.npz")), tmp_path / "run.toml")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "sgm_pyro.cli", "fit", "--config", str(config),
           "--out", str(tmp_path / "run"), "--no-progress"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("sgm fit: wrote") == 1 and "x 2 processes" in done.stdout  # rank 0 alone reports
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.toml", "metrics.json", "model.pt",
                                                     "training.png"]
    assert json.loads((run / "metrics.json").read_text())["fit"]["processes"] == 2
    assert len(torch.load(run / "checkpoint.pt", weights_only=True)["stage"]["rank_rng"]) == 2


def test_cli_distributed_without_torchrun_explains_how_to_launch(monkeypatch, capsys, tmp_path):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["fit", "--distributed", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "torchrun --nproc-per-node" in err and "WORLD_SIZE" in err
    assert not (tmp_path / "run").exists()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
