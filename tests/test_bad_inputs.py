"""Every bad input named in docs/bad_inputs.md raises an error that names the problem (one test each)."""

import math
import re

import pytest
import torch
from test_config import tiny_config, write_tiny_data

import sgm_pyro
from sgm_pyro import cli
from sgm_pyro.config import GroupConfig, build_group, save_config
from sgm_pyro.data import DSpritesStream, dsprites, load_mnist, load_npz, rotate_fixed
from sgm_pyro.inference import iwlb
from sgm_pyro.models import make_prior

SHAPE = (1, 12, 12)
ROT = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))


def model():
    return sgm_pyro.SGM(ROT, SHAPE, inference_kwargs=dict(hidden=(8,)),
                        prior_kwargs=dict(feature_hidden=(8,), hidden=(8,), transforms=1))


def x(n=4, shape=SHAPE, value=-1.0, dtype=torch.float32):
    return torch.full((n, *shape), value, dtype=dtype)


def fit(data, batch_size=2, **kw):
    return model().fit(data, inference_steps=1, prior_steps=1, batch_size=batch_size, progress=False, **kw)


API = [
    ("wrong rank", lambda: model().prototype(torch.zeros(4, 12, 12)), r"shape \(N, C, H, W\), got shape \(4, 12, 12\)"),
    ("wrong channels", lambda: model().infer_eta(x(shape=(3, 12, 12))), r"image shape \(C, H, W\) = \(1, 12, 12\)"),
    ("wrong image size", lambda: model().resample(x(shape=(1, 28, 28))), r"got \(1, 28, 28\)"),
    ("integer dtype", lambda: model().prototype(x(value=0, dtype=torch.uint8)), r"floating point .* got dtype torch.uint8"),
    ("NaN pixels", lambda: model().prototype(x(value=float("nan"))), r"NaN or inf pixels"),
    ("inf pixels", lambda: fit(x(value=float("inf"))), r"images contains NaN or inf pixels"),
    ("pixels in [0, 255]", lambda: model().prototype(x(value=255.0)), r"values in \[-1, 1\].*x / 127.5 - 1"),
    ("pixels in [0, 1]", lambda: model().prototype(unit_range()),
     r"no pixel below 0 .*like images in \[0, 1\].*x \* 2 - 1"),
    ("training images in [0, 1]", lambda: fit(unit_range()), r"images has no pixel below 0.*x \* 2 - 1"),
    ("a stream of [0, 1] batches", lambda: fit(lambda n: unit_range(n)),
     r"the first training batch has no pixel below 0"),
    ("a stream of another batch size", lambda: fit(iter([x(4)] * 3), batch_size=2),
     r"training batch 1 has 4 images but batch_size is 2"),
    ("empty data set", lambda: fit(x(n=0)), r"images is empty \(0 images\)"),
    ("batch larger than data", lambda: fit(x(n=4), batch_size=16), r"batch_size \(16\) is larger than the dataset"),
    ("batch size 0", lambda: fit(x(n=4), batch_size=0), r"batch_size must be a positive integer, got 0"),
    ("negative steps", lambda: model().fit(x(), inference_steps=-1, prior_steps=1, progress=False),
     r"inference_steps must be a non-negative integer, got -1"),
    ("unknown fit option", lambda: fit(x(), learning_rate=1.0), r"unknown option 'learning_rate'"),
    ("stream of the wrong image size", lambda: fit(lambda n: x(n, shape=(1, 10, 10))),
     r"the first training batch must have image shape"),
    ("validation images of the wrong size", lambda: fit(x(), val_images=x(shape=(1, 10, 10))),
     r"val_images must have image shape"),
    ("bounds of the wrong length", lambda: sgm_pyro.AffineGroup(bounds=(1.0, 2.0)),
     r"bounds must have 5 entries \(one per η coordinate\), got 2"),
    ("non-positive bounds", lambda: sgm_pyro.AffineGroup(bounds=(0.0,), generators=("rot",)),
     r"bounds must be positive for every coordinate \('rot',\)"),
    ("unknown generator", lambda: sgm_pyro.AffineGroup(generators=("zoom",)), r"generators must be distinct names"),
    ("unknown group name", lambda: sgm_pyro.groups.make_group("shear"), r"unknown group 'shear'"),
    ("unknown group in a config", lambda: build_group(GroupConfig(name="mobius")), r"unknown group 'mobius'"),
    ("unknown prior name", lambda: sgm_pyro.SGM(ROT, SHAPE, "gauss"), r"unknown prior 'gauss'; expected one of"),
    ("prior without image shape", lambda: make_prior("flow", ROT), r"prior 'flow' needs image_shape"),
    ("image_shape without channels", lambda: sgm_pyro.SGM(ROT, (12, 12)), r"image_shape must be \(C, H, W\)"),
    ("unknown inference network", lambda: sgm_pyro.SGM(ROT, SHAPE, inference_kwargs=dict(net="resnet")),
     r"net must be one of \('mlp', 'cnn'\)"),
    ("num_samples < 1", lambda: model().resample(x(), 0), r"num_samples must be a positive integer, got 0"),
    ("num_samples < 1 for sample_eta", lambda: model().sample_eta(x(), 0), r"num_samples must be a positive integer"),
    ("K < 1 for iwlb", lambda: (lambda m: iwlb(m.model, m.guide, x(), num_samples=0))(model()),
     r"num_samples must be an int >= 1, got 0"),
    ("eta of the wrong width", lambda: model().log_prob_eta(torch.zeros(4, 2), x()),
     r"eta must have shape \(N, 1\) for coordinates \('rot',\), got \(4, 2\)"),
    ("eta rows differ from images", lambda: ROT.apply(x(), torch.zeros(3, 1)), r"eta batch size 3 does not match"),
    ("colour group on grey images", lambda: sgm_pyro.ColorGroup().apply(x(), torch.zeros(4, 3)),
     r"must have 3 \(RGB\) channels"),
    ("dsprites n = 0", lambda: dsprites(0), r"n must be a positive int, got 0"),
    ("unknown dsprites laws", lambda: dsprites(2, laws="nope"), r"unknown laws 'nope'"),
    ("dsprites stream batch 0", lambda: DSpritesStream(0), r"batch_size must be a positive int"),
    ("rotation range > 180", lambda: rotate_fixed(x(), 300), r"max_degrees must be in \[0, 180\], got 300"),
    ("missing MNIST directory", lambda: load_mnist("/nonexistent/mnist"), r"MNIST directory '/nonexistent/mnist' does not exist"),
    ("npz without the images array", lambda: load_npz(write_empty_npz()), r"no array named 'images'"),
    ("missing model file", lambda: sgm_pyro.SGM.load("/nonexistent/model.pt"), r"no checkpoint at /nonexistent/model.pt"),
    ("a run folder given to SGM.load", lambda: sgm_pyro.SGM.load(run_folder()), r"is a folder.*pass .*run/model.pt"),
]


def unit_range(n=4):
    """Images in [0, 1] (torchvision's convention): a lit block on a background of 0."""
    out = torch.zeros(n, *SHAPE)
    out[:, :, 3:8, 3:8] = torch.rand(n, 1, 5, 5)
    return out


def run_folder():
    import tempfile
    from pathlib import Path
    run = Path(tempfile.mkdtemp()) / "run"
    run.mkdir()
    model().save(run / "model.pt")
    return run


def write_empty_npz():
    import os
    import tempfile

    import numpy as np
    path = os.path.join(tempfile.mkdtemp(), "other.npz")
    np.savez(path, pixels=np.zeros((2, 4, 4), np.uint8))
    return path


@pytest.mark.parametrize("call, match", [case[1:] for case in API], ids=[case[0] for case in API])
def test_api_rejects_bad_input(call, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        call()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    data = write_tiny_data(root / "bars.npz")
    save_config(tiny_config(data), root / "run.toml")
    (root / "run").mkdir()
    (root / "run" / "config.toml").write_bytes((root / "run.toml").read_bytes())
    (root / "done").mkdir()
    (root / "done" / "model.pt").write_bytes(b"")
    return root


CLI = [
    ("unknown data set", ["fit", "--data", "cifar"], r"unknown data set 'cifar'"),
    ("npz: without a path", ["fit", "--data", "npz:"], r"data name 'npz:' needs a path"),
    ("missing npz file", ["fit", "--data", "npz:/nonexistent/x.npz"], r"npz file '/nonexistent/x.npz' does not exist"),
    ("missing IDX directory", ["fit", "--data", "idx:/nonexistent/dir"], r"MNIST directory '/nonexistent/dir' does not exist"),
    ("unknown config key via --set", ["fit", "--set", "inference.learning_rate=1"],
     r"unknown key 'learning_rate' in \[inference\]; allowed keys: steps, batch_size"),
    ("malformed --set", ["fit", "--set", "lr"], r"--set expects SECTION.KEY=VALUE"),
    ("unknown group flag", ["fit", "--group", "mobius"], r"unknown group 'mobius'"),
    ("unknown prior flag", ["fit", "--prior", "gauss"], r"unknown prior 'gauss'"),
    ("missing config file", ["fit", "--config", "/nonexistent.toml"], r"no config file at /nonexistent.toml"),
    ("more held-out images than data", ["fit", "--config", "{root}/run.toml", "--set", "data.n_test=100",
                                        "--out", "{root}/x"], r"has 48 images: data.n_val \(8\) \+ data.n_test \(100\)"),
    ("negative n_train", ["fit", "--n-train", "-1"], r"data.n_train must be a non-negative integer"),
    ("rotation out of range", ["fit", "--rotation", "270"], r"data.rotation_degrees must be in \[0, 180\]"),
    ("zero steps", ["fit", "--inference-steps", "0"], r"InferenceConfig.steps must be a positive integer"),
    ("unavailable CUDA device", ["fit", "--device", "cuda:99"], r"device 'cuda:99' was asked for but"),
    ("unknown device", ["fit", "--device", "tpu7"], r"unknown device 'tpu7'"),
    ("resume without a checkpoint", ["fit", "--resume", "{root}/run"], r"no checkpoint.pt in .*nothing to resume"),
    ("resume with new settings", ["fit", "--resume", "{root}/run", "--seed", "1"], r"--resume continues the run"),
    ("out already holds a run", ["fit", "--config", "{root}/run.toml", "--out", "{root}/done"],
     r"already holds a run \(model.pt\)"),
    ("evaluate a folder without model.pt", ["evaluate", "{root}/run"], r"no model.pt in .*sgm fit --resume"),
    ("evaluate a missing folder", ["evaluate", "/nonexistent/run"], r"run folder '/nonexistent/run' does not exist"),
    ("evaluate an empty model.pt", ["evaluate", "{root}/done"], r"unreadable \(truncated or corrupted\?\)"),
    ("sample with --num-samples 0", ["sample", "{root}/done", "--num-samples", "0"],
     r"--num-samples must be a positive integer, got 0"),
    ("plot a folder with nothing to plot", ["plot", "{root}/run"], r"no model.pt or checkpoint.pt"),
]


@pytest.mark.parametrize("argv, match", [case[1:] for case in CLI], ids=[case[0] for case in CLI])
def test_cli_rejects_bad_input_with_exit_2(tiny, capsys, argv, match):
    argv = [a.format(root=tiny) for a in argv]
    assert cli.main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sgm {argv[0]}: error: ") and "Traceback" not in err
    assert re.search(match, err), err


def test_nonnegative_images_are_accepted_only_inside_the_opt_out():
    from sgm_pyro.validation import allow_nonnegative_images
    m, images = model(), unit_range()
    with allow_nonnegative_images():
        assert m.prototype(images).shape == images.shape
    with pytest.raises(ValueError, match="no pixel below 0"):  # the check is back after the block
        m.prototype(images)
    assert m.prototype(images * 2 - 1).shape == images.shape  # the conversion the message names


def test_fit_on_cuda_without_cuda_gives_the_command_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^device 'cuda' was asked for but CUDA is not available here"):
        fit(x(8), device="cuda")
    with pytest.raises(ValueError, match=r"^device 'cuda:1' was asked for but CUDA is not available here"):
        sgm_pyro.fit_vae(sgm_pyro.VAE(SHAPE, latent_dim=2), x(8), steps=1, batch_size=2, device="cuda:1",
                         progress=False)
    assert sgm_pyro.resolve_device("auto") == sgm_pyro.resolve_device(None) == torch.device("cpu")
