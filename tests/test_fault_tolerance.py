"""Crashes, corrupted checkpoints and diverging losses: a run is never lost and never silently wrong."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_config import tiny_config, write_tiny_data

from sgm_pyro import cli
from sgm_pyro.config import save_config
from sgm_pyro.inference.checkpoint import save_atomic
from sgm_pyro.inference.stage1 import InferenceConfig

# One thread per process: the reference and the victim run side by side on a small machine.
ENV = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}


def sgm_process(*args):
    return subprocess.Popen([sys.executable, "-m", "sgm_pyro.cli", *args, "--no-progress"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=120):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


def checkpoint_step(path):
    try:
        return torch.load(path, weights_only=True)["stage"]
    except Exception:  # not written yet, or being replaced right now
        return None


def state_dict(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture
def config_file(tmp_path):
    """A run with enough tiny steps (30 + 10, a checkpoint after each) to be killed half-way."""
    cfg = tiny_config(write_tiny_data(tmp_path / "bars.npz"), checkpoint_every=1,
                      inference={"steps": 30, "val_every": 10}, prior={"steps": 10, "val_every": 5})
    return save_config(cfg, tmp_path / "run.toml")


def test_sigkill_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path, config_file):
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    reference = sgm_process("fit", "--config", str(config_file), "--out", str(ref_dir))
    victim = sgm_process("fit", "--config", str(config_file), "--out", str(run_dir))
    stage, deadline = None, time.monotonic() + 90
    while victim.poll() is None and time.monotonic() < deadline:
        stage = checkpoint_step(run_dir / "checkpoint.pt")
        if stage is not None and stage["step"] > 0:
            break
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert stage["stage"] == "inference" and 0 < stage["step"] < 30, stage
    assert not (run_dir / "model.pt").exists()

    finish(sgm_process("fit", "--resume", str(run_dir)))
    finish(reference)
    ref, resumed = state_dict(ref_dir / "model.pt"), state_dict(run_dir / "model.pt")
    assert ref.keys() == resumed.keys()
    for key in ref:
        assert torch.equal(ref[key], resumed[key]), key
    ref_hist = torch.load(ref_dir / "model.pt", weights_only=True)["history"]
    res_hist = torch.load(run_dir / "model.pt", weights_only=True)["history"]
    assert res_hist["inference"]["loss"] == ref_hist["inference"]["loss"]
    assert res_hist["prior"]["loss"] == ref_hist["prior"]["loss"]


@pytest.fixture(scope="module")
def _finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    cfg = tiny_config(write_tiny_data(root / "bars.npz"))
    save_config(cfg, root / "run.toml")
    assert cli.main(["fit", "--config", str(root / "run.toml"), "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


@pytest.fixture
def finished_run(_finished, tmp_path):
    """A copy of one tiny run killed after its last checkpoint, before model.pt was written.

    (Its config points at data outside the copy, which is fine. A run that holds model.pt is
    complete, and ``--resume`` leaves it alone without reading the checkpoint.)
    """
    shutil.copytree(_finished, tmp_path / "run")
    (tmp_path / "run" / "model.pt").unlink()
    return tmp_path / "run"


def _foreign_checkpoint(tmp_path, **sections):
    """checkpoint.pt of another tiny run (different group or image size)."""
    data = write_tiny_data(tmp_path / "other.npz")
    cfg = tiny_config(data, inference={"steps": 1}, prior={"steps": 1}, **sections)
    assert cli.main(["fit", "--config", str(save_config(cfg, tmp_path / "other.toml")), "--out",
                     str(tmp_path / "other"), "--no-progress"]) == 0
    return (tmp_path / "other" / "checkpoint.pt").read_bytes()


@pytest.mark.parametrize("damage, match", [
    (lambda good, tmp: good[: len(good) // 2], "unreadable \\(truncated or corrupted\\?\\)"),
    (lambda good, tmp: good[:100] + b"\x00garbage" * 64 + good[612:], "unreadable"),
    (lambda good, tmp: b"", "unreadable"),
    (lambda good, tmp: _foreign_checkpoint(tmp, group={"generators": ["tx"], "bounds": [0.5]}),
     "different model configuration"),
], ids=["truncated", "corrupted", "empty", "other-group"])
def test_bad_checkpoint_gives_a_clear_error_and_is_left_alone(tmp_path, finished_run, capsys, damage, match):
    ckpt = finished_run / "checkpoint.pt"
    bad = damage(ckpt.read_bytes(), tmp_path)
    ckpt.write_bytes(bad)
    assert cli.main(["fit", "--resume", str(finished_run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgm fit: error: ") and "Traceback" not in err
    assert re.search(match, err), err
    assert ckpt.read_bytes() == bad  # nothing was overwritten: the file can still be inspected


def test_checkpoint_of_another_image_size_is_refused(tmp_path, finished_run, capsys):
    other = tmp_path / "big.npz"
    import numpy as np
    np.savez(other, images=np.zeros((48, 16, 16), np.uint8))
    cfg = tiny_config(other, inference={"steps": 1}, prior={"steps": 1})
    assert cli.main(["fit", "--config", str(save_config(cfg, tmp_path / "big.toml")), "--out",
                     str(tmp_path / "big"), "--no-progress"]) == 0
    foreign = (tmp_path / "big" / "checkpoint.pt").read_bytes()
    (finished_run / "checkpoint.pt").write_bytes(foreign)
    assert cli.main(["fit", "--resume", str(finished_run), "--no-progress"]) == 2
    assert "different model configuration" in capsys.readouterr().err
    assert (finished_run / "checkpoint.pt").read_bytes() == foreign
    # and a model of another image size refuses the run's images
    data = write_tiny_data(tmp_path / "bars.npz")
    assert cli.main(["evaluate", str(tmp_path / "big"), "--data", f"npz:{data}"]) == 2
    assert "image shape (C, H, W) = (1, 16, 16)" in capsys.readouterr().err


def test_a_failed_write_keeps_the_previous_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"step": 1, "w": torch.ones(3)}, path)
    good = path.read_bytes()

    def dying_save(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")
    # the module that implements save_atomic, wherever it lives
    monkeypatch.setattr(sys.modules[save_atomic.__module__].torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"step": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    cfg = tiny_config(write_tiny_data(tmp_path / "bars.npz"), checkpoint_every=1,
                      inference={"steps": 6, "val_every": 100})
    save_config(cfg, tmp_path / "run.toml")
    real_loss = InferenceConfig.loss

    def poisoned(self):
        loss, calls = real_loss(self), [0]

        def call(inference, x):
            terms = loss(inference, x)
            calls[0] += 1
            if calls[0] == 4:  # the 4th training step, index 3
                terms["loss"] = terms["loss"] * float("nan")
            return terms
        return call
    monkeypatch.setattr(InferenceConfig, "loss", poisoned)
    out = tmp_path / "run"
    assert cli.main(["fit", "--config", str(tmp_path / "run.toml"), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "sgm fit: error: stage 1: the loss became nan at step 3" in err and "last good checkpoint" in err
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["stage"]["stage"] == "inference" and ckpt["stage"]["step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (out / "model.pt").exists()


def test_absurd_learning_rate_stops_with_a_message(tmp_path, capsys):
    cfg = tiny_config(write_tiny_data(tmp_path / "bars.npz"), checkpoint_every=1,
                      inference={"steps": 8, "lr": 1e30, "warmup_fraction": 0.0, "val_every": 100})
    save_config(cfg, tmp_path / "run.toml")
    out = tmp_path / "run"
    assert cli.main(["fit", "--config", str(tmp_path / "run.toml"), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    found = re.search(r"^sgm fit: error: stage 1: (the loss became (nan|inf)|the network's output became "
                      r"non-finite) at step (\d+); training stopped", err)
    assert found, err
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["stage"]["step"] == int(found.group(3))
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
