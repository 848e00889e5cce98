"""The ``sgm`` command line: run folders that repeat themselves, every command, help, and clean errors."""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from test_config import tiny_config, write_tiny_data

from sgm_pyro import cli
from sgm_pyro.config import load_config, save_config

COMMANDS = ("fit", "evaluate", "sample", "plot", "demo", "experiment", "benchmark")


def sgm(*args):
    return cli.main([*args, "--no-progress"])


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_every_command_and_option_has_help(capsys):
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == set(COMMANDS)
    for name, sub in subs.choices.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, f"sgm {name} {action.option_strings or action.dest} has no help"
        with pytest.raises(SystemExit) as exit_:
            cli.main([name, "--help"])
        assert exit_.value.code == 0
        assert f"usage: sgm {name}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny fitted run folder shared by the read-only commands."""
    root = tmp_path_factory.mktemp("cli")
    cfg = tiny_config(write_tiny_data(root / "bars.npz"))
    save_config(cfg, root / "run.toml")
    assert sgm("fit", "--config", str(root / "run.toml"), "--out", str(root / "run")) == 0
    return root / "run", cfg


def test_fit_writes_a_complete_run_folder(run):
    out, cfg = run
    for name in ("config.toml", "checkpoint.pt", "model.pt", "metrics.json", "training.png"):
        assert (out / name).stat().st_size > 0, name
    assert load_config(out / "config.toml") == cfg
    fit = json.loads((out / "metrics.json").read_text())["fit"]
    assert fit["inference"]["steps"] == 4 and fit["prior"]["steps"] == 2 and fit["device"] == "cpu"
    assert fit["inference"]["loss"] > 0 and fit["prior"]["val_log_prob"] is not None


def test_a_run_repeats_from_its_folder_alone(run, tmp_path):
    out, _ = run
    assert sgm("fit", "--config", str(out / "config.toml"), "--out", str(tmp_path / "again")) == 0
    a, b = weights(out / "model.pt"), weights(tmp_path / "again" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_sample_and_plot(run, tmp_path):
    out, cfg = run
    assert sgm("evaluate", str(out), "--out", str(tmp_path)) == 0
    ev = json.loads((tmp_path / "metrics.json").read_text())["evaluate"]
    assert ev["n_test"] == cfg.data.n_test and ev["invariance"]["invariance_error"] >= 0
    assert isinstance(ev["heldout_log_prob_eta"], float) and isinstance(ev["log_prob_eta_at_pose"], float)
    assert set(ev["invariance"]["per_class_spread"]) == {"0", "1"}  # the npz labels
    assert (tmp_path / "prototypes.png").stat().st_size > 0 and (tmp_path / "resamples.png").stat().st_size > 0

    assert sgm("sample", str(out), "--out", str(tmp_path), "--num-images", "3", "--num-samples", "5") == 0
    s = torch.load(tmp_path / "samples.pt", weights_only=True)
    assert s["resamples"].shape == (5, 3, 1, 12, 12) and s["images"].shape == s["prototypes"].shape == (3, 1, 12, 12)
    assert s["resamples"].abs().max() <= 1 + 1e-5 and (tmp_path / "samples.png").stat().st_size > 0

    (out / "samples.pt").write_bytes((tmp_path / "samples.pt").read_bytes())
    assert sgm("plot", str(out), "--out", str(tmp_path / "figs")) == 0
    for name in ("training.png", "samples.png", "prototypes.png"):
        assert (tmp_path / "figs" / name).stat().st_size > 0, name


def test_flags_and_set_override_the_config(tmp_path):
    data = write_tiny_data(tmp_path / "bars.npz")
    save_config(tiny_config(data), tmp_path / "run.toml")
    assert sgm("fit", "--config", str(tmp_path / "run.toml"), "--out", str(tmp_path / "run"), "--seed", "5",
               "--inference-steps", "1", "--prior-steps", "1", "--batch-size", "4", "--prior", "box",
               "--set", "model.prior_kwargs={}", "--set", "inference.lr=0.01", "--set", "data.n_val=4") == 0
    cfg = load_config(tmp_path / "run" / "config.toml")
    assert (cfg.seed, cfg.inference.steps, cfg.prior.steps) == (5, 1, 1)
    assert cfg.inference.batch_size == cfg.prior.batch_size == 4 and cfg.model.prior == "box"
    assert cfg.inference.lr == 0.01 and cfg.data.n_val == 4
    assert len(torch.load(tmp_path / "run" / "model.pt", weights_only=True)["history"]["inference"]["loss"]) == 1


def test_dsprites_run_is_evaluated_with_the_symmetry_report(tmp_path, monkeypatch):
    from sgm_pyro.experiments import dsprites_report
    seen = {}

    def report(model, test, latents, out, **kw):  # the report itself is tested with the demo
        seen.update(model=model, test=test, latents=latents, out=out, **kw)
        return {"invariance": {"invariance_error": 0.5}, "recovery": {"per_shape": {"heart": {}}}}
    monkeypatch.setattr(dsprites_report, "dsprites_report", report)
    cfg = tiny_config("unused", data={"name": "dsprites", "n_train": 16, "n_val": 8, "n_test": 12,
                                      "rotation_degrees": 0.0},
                      group={"generators": ["tx", "ty", "rot"], "bounds": [0.75, 0.75, 3.14159], "squash": True},
                      model={"inference_net": {"hidden": [16], "input_size": 16},
                             "prior_kwargs": {"feature_hidden": [16], "hidden": [16], "transforms": 1}},
                      inference={"steps": 2}, prior={"steps": 2})
    save_config(cfg, tmp_path / "d.toml")
    assert sgm("fit", "--config", str(tmp_path / "d.toml"), "--out", str(tmp_path / "run")) == 0
    assert sgm("evaluate", str(tmp_path / "run"), "--num-resamples", "1") == 0
    assert seen["test"].shape == (12, 1, 64, 64) and seen["latents"]["shape"].shape == (12,)
    assert seen["model"].image_shape == (1, 64, 64) and seen["out"] == tmp_path / "run"
    assert seen["num_resamples"] == 1 and seen["seed"] == cfg.seed
    ev = json.loads((tmp_path / "run" / "metrics.json").read_text())["evaluate"]
    assert ev == {"invariance": {"invariance_error": 0.5}, "recovery": {"per_shape": {"heart": {}}}, "data": "dsprites"}


def test_demo_keeps_its_options(monkeypatch, tmp_path):
    from sgm_pyro.experiments import dsprites_demo
    seen = {}
    monkeypatch.setattr(dsprites_demo, "run_demo", lambda out, cfg, **kw: seen.update(out=out, cfg=cfg, **kw))
    assert cli.main(["demo", "--out", str(tmp_path), "--inference-steps", "7", "--prior-steps", "3", "--seed", "2",
                     "--device", "cpu", "--resume", "--no-progress"]) == 0
    assert seen["out"] == str(tmp_path) and seen["resume"] and not seen["progress"] and str(seen["device"]) == "cpu"
    assert (seen["cfg"].inference_steps, seen["cfg"].prior_steps, seen["cfg"].seed) == (7, 3, 2)
    assert cli.main(["demo", "--budget", "long"]) == 0
    assert seen["out"] == "runs/demo" and seen["cfg"] == dsprites_demo.DemoConfig.long(seed=0)
    assert cli.main(["demo", "--rotation-head", "circle"]) == 0
    assert seen["cfg"].rotation_head == "circle" and dsprites_demo.DemoConfig().rotation_head == "moments"


def test_demo_on_cuda_without_cuda_says_so(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["demo", "--device", "cuda", "--no-progress"]) == 2
    assert "sgm demo: error: device 'cuda' was asked for but CUDA is not available here" in capsys.readouterr().err


def test_experiment_rotated_mnist_builds_its_config(monkeypatch, tmp_path):
    from sgm_pyro.experiments import rotated_mnist
    seen = {}
    monkeypatch.setattr(rotated_mnist, "run_rotated_mnist",
                        lambda images, labels, out, cfg, **kw: seen.update(images=images, out=out, cfg=cfg, **kw))
    data = write_tiny_data(tmp_path / "bars.npz")
    assert cli.main(["experiment", "rotated-mnist", "--data", f"npz:{data}", "--out", str(tmp_path / "x"),
                     "--thetas", "15", "90", "--sizes", "16", "--seeds", "0", "1", "--batch-size", "8",
                     "--models", "VAE", "AugVAE", "--num-samples", "5", "--device", "cpu"]) == 0
    c = seen["cfg"]
    assert c.thetas == (15.0, 90.0) and c.sizes == (16,) and c.seeds == (0, 1) and c.models == ("VAE", "AugVAE")
    assert c.num_samples == 5 and seen["images"].shape == (48, 1, 12, 12) and str(seen["device"]) == "cpu"


def test_experiment_reports_a_missing_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sgm_pyro.experiments.rotated_mnist", None)
    assert cli.main(["experiment", "rotated-mnist"]) == 2
    assert "sgm experiment: error: the rotated-MNIST experiment is not available" in capsys.readouterr().err


def test_bad_input_from_the_console_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "sgm_pyro.cli", "fit", "--data", "cifar10"], capture_output=True,
                          text=True, env={**os.environ, "MPLBACKEND": "Agg"}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("sgm fit: error: unknown data set 'cifar10'; expected one of "
                                   "['dsprites', 'mnist', 'fashion-mnist'], 'npz:PATH' or 'idx:DIR'")


def test_evaluate_prints_each_number_with_its_scale(run, tmp_path, capsys):
    out, _ = run
    assert sgm("evaluate", str(out / "model.pt"), "--out", str(tmp_path)) == 0  # a file in the folder names it
    printed = capsys.readouterr().out
    ev = json.loads((tmp_path / "metrics.json").read_text())["evaluate"]
    uniform = -math.log(2 * math.pi)  # the rotation box ±π
    assert ev["uniform_log_prob_eta"] == pytest.approx(uniform)
    assert "0 = perfectly invariant prototypes, about 2 = as different as two unrelated images" in printed
    assert f"{ev['invariance']['invariance_error']:.4f}" in printed
    assert f"higher is better; a uniform density on the box scores {uniform:.3f}" in printed
    assert set(ev["invariance"]) >= {"within_class_spread", "between_class_spread", "per_class_spread"}
    assert not any("shape" in key for key in ev["invariance"])  # the npz's labels are classes, not shapes


def test_run_folder_repeats_from_any_directory(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    write_tiny_data(tmp_path / "project" / "bars.npz")
    save_config(tiny_config("bars.npz"), "run.toml")  # a relative data path, as a user types it
    assert sgm("fit", "--config", "run.toml", "--out", "runs/x") == 0
    saved = load_config("runs/x/config.toml")
    assert saved.data.name == f"npz:{tmp_path}/project/bars.npz"
    monkeypatch.chdir(tmp_path / "elsewhere")
    run = str(tmp_path / "project" / "runs" / "x")
    assert sgm("evaluate", run, "--out", "ev") == 0 and sgm("plot", run, "--out", "figs") == 0
    assert sgm("fit", "--config", f"{run}/config.toml", "--out", "again") == 0
    a, b = weights(f"{run}/model.pt"), weights("again/model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_data_names_the_option_that_fixes_it(run, tmp_path, capsys):
    out, _ = run
    assert sgm("evaluate", str(out), "--data", f"npz:{tmp_path}/moved.npz") == 2
    err = capsys.readouterr().err
    assert re.search(r"npz file '.*moved.npz' does not exist; point to the file with --data npz:PATH", err), err
    assert sgm("evaluate", str(out), "--data", "mnist") == 2
    assert "--data idx:DIR, or set data.root" in capsys.readouterr().err


def test_resume_of_a_finished_run_leaves_it_alone(run, tmp_path, capsys):
    out, _ = run
    before = {name: (out / name).read_bytes() for name in ("model.pt", "checkpoint.pt", "metrics.json")}
    mtime = (out / "model.pt").stat().st_mtime_ns
    assert sgm("fit", "--resume", str(out)) == 0
    printed = capsys.readouterr().out
    assert "is already complete" in printed and "(resumed" not in printed and f"sgm evaluate {out}" in printed
    assert (out / "model.pt").stat().st_mtime_ns == mtime
    assert {name: (out / name).read_bytes() for name in before} == before


def test_resume_accepts_the_config_file_of_the_run(run, tmp_path, capsys):
    out, _ = run
    crashed = tmp_path / "crashed"
    shutil.copytree(out, crashed)
    (crashed / "model.pt").unlink()  # killed after its last checkpoint
    assert sgm("fit", "--resume", str(crashed / "config.toml")) == 0
    assert "(resumed from its checkpoint)" in capsys.readouterr().out
    a, b = weights(out / "model.pt"), weights(crashed / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    (tmp_path / "notes.txt").write_text("")
    assert sgm("fit", "--resume", str(tmp_path / "notes.txt")) == 2
    assert "is a file; pass the run folder that holds it" in capsys.readouterr().err
