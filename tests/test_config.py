"""Run configurations: TOML round trips, unknown keys, wrong types, and building a model from a config."""

import math
import tomllib

import numpy as np
import pytest

from sgm_pyro.config import RunConfig, build_model, dumps_toml, from_dict, load_config, save_config, to_dict


def write_tiny_data(path, n=48):
    """A tiny .npz data set: ``n`` horizontal bars, 12x12 uint8 (rotated by the run's data.rotation_degrees)."""
    x = np.zeros((n, 12, 12), np.uint8)
    x[:, 5:7, 2:10] = 255
    x[n // 2:, 4:8, 4:8] = 255  # a second class: bar plus a block
    np.savez(path, images=x, labels=(np.arange(n) >= n // 2).astype(np.int64))
    return path


def tiny_config(data_path, **sections) -> RunConfig:
    """A run that fits in seconds on a CPU: rotation group, 16-unit nets, a handful of steps."""
    base = {
        "seed": 3, "checkpoint_every": 2,
        "data": {"name": f"npz:{data_path}", "n_val": 8, "n_test": 8, "rotation_degrees": 180.0},
        "group": {"name": "affine", "generators": ["rot"], "bounds": [math.pi]},
        "model": {"inference_net": {"hidden": [16]},
                  "prior_kwargs": {"feature_hidden": [16], "hidden": [16], "transforms": 1}},
        "inference": {"steps": 4, "batch_size": 8, "val_every": 2},
        "prior": {"steps": 2, "batch_size": 8, "val_every": 1},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            base.setdefault(name, {}).update(values)
        else:
            base[name] = values
    return from_dict(RunConfig, base)


def test_default_config_round_trips_exactly(tmp_path):
    cfg = RunConfig()
    assert load_config(save_config(cfg, tmp_path / "c.toml")) == cfg


def test_custom_config_round_trips_exactly(tmp_path):
    cfg = tiny_config("/data/a \"quoted\" path/ünï.npz", inference={"lr": 1e-5 / 3, "symmetric": False})
    cfg.model.prior_kwargs["slope"] = 0.1 + 0.2  # a float whose shortest repr has 17 digits
    cfg.group.fill = float("inf")
    text = (tmp_path / "c.toml")
    save_config(cfg, text)
    back = load_config(text)
    assert back == cfg
    assert back.inference.lr == 1e-5 / 3 and back.model.prior_kwargs["slope"] == 0.1 + 0.2
    assert tomllib.loads(text.read_text())["data"]["name"] == cfg.data.name


def test_dumps_toml_writes_nested_tables_and_lists():
    data = {"a": 1, "b": [1.5, -2.0], "t": {"s": "x\ny", "flag": True, "u": {"deep": []}}}
    assert tomllib.loads(dumps_toml(data)) == data


def test_missing_keys_keep_defaults(tmp_path):
    (tmp_path / "c.toml").write_text('[inference]\nsteps = 7\nlr = 1\n')
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.inference.steps == 7 and cfg.inference.lr == 1.0 and isinstance(cfg.inference.lr, float)
    assert cfg.prior == RunConfig().prior and cfg.data.name == "dsprites"


@pytest.mark.parametrize("text, match", [
    ("sed = 1\n", r"unknown key 'sed' in the top level; allowed keys: seed, device"),
    ("[inference]\nlearning_rate = 1.0\n", r"unknown key 'learning_rate' in \[inference\]; allowed keys: steps, "),
    ("[model.inference_net]\nwidth = 3\n", r"unknown key 'width' in \[model.inference_net\]; allowed keys: net, "),
    ("[model]\nprior = \"box\"\n[model.prior_kwargs]\nbins = 3\n", r"unknown key 'bins' in \[model.prior_kwargs\]"),
    ("[optim]\nlr = 1\n", r"unknown key 'optim' in the top level"),
    ("[inference]\nlr = \"fast\"\n", r"inference.lr must be float, got 'fast'"),
    ("[inference]\nsteps = 1.5\n", r"inference.steps must be int, got 1.5"),
    ("[group]\nbounds = [1, \"a\"]\n", r"group.bounds\[1\] must be float"),
    ("seed = true\n", r"seed must be int, got True"),
    ("data = 3\n", r"\[data\] must be a table"),
    ("[group]\nbounds = [1.0, 2.0]\n", r"bounds must have 5 entries"),
    ("[group]\nname = \"zoom\"\n", r"unknown group 'zoom'"),
    ("[model]\nprior = \"gauss\"\n", r"unknown prior 'gauss'"),
    ("[data]\nname = \"cifar\"\n", r"unknown data set 'cifar'"),
    ("[prior]\nbatch_size = 64\n", r"prior.batch_size \(64\) must equal inference.batch_size \(512\)"),
    ("[inference]\nsteps = 0\n", r"InferenceConfig.steps must be a positive integer"),
    ("[data\n", r"not valid TOML"),
    ("[inference]\naugment_scale = \"big\"\n", r"inference.augment_scale must be float or Sequence or Mapping"),
    ("[inference]\naugment_scale = 0\n", r"InferenceConfig.augment_scale must be a positive number"),
    ("[prior.augment_scale]\ntx = -1\n", r"PriorConfig.augment_scale as a mapping must .* positive number"),
])
def test_bad_config_files_name_the_problem(tmp_path, text, match):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config(tmp_path / "c.toml")


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="no config file"):
        load_config("/nonexistent/run.toml")


def test_build_model_follows_the_config():
    cfg = tiny_config("x.npz", group={"squash": True, "bounds": [1.0]}, model={"prior": "box", "prior_kwargs": {}})
    model = build_model(cfg, (1, 12, 12))
    assert model.group.names == ("rot",) and model.group.squash and model.group.bounds.tolist() == [1.0]
    assert model.config()["prior"] == "box" and model.image_shape == (1, 12, 12)
    assert to_dict(cfg)["model"]["inference_net"] == {"hidden": [16]}


def test_affine_plus_color_splits_bounds():
    cfg = tiny_config("x.npz", group={"name": "affine+color", "generators": ["tx", "rot"],
                                      "bounds": [0.25, math.pi, 0.5, 2.31, 0.51]})
    g = build_model(cfg, (3, 12, 12)).group
    assert g.dim == 5 and g.bounds.tolist() == pytest.approx([0.25, math.pi, 0.5, 2.31, 0.51])


def test_optional_fields_are_absent_from_toml_and_come_back_as_none(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Section:
        size: int | None = None

    assert to_dict(Section()) == {} and from_dict(Section, {}) == Section()
    assert from_dict(Section, tomllib.loads(dumps_toml(to_dict(Section(32))))) == Section(32)
    with pytest.raises(ValueError, match="size must be int, got 'big'"):
        from_dict(Section, {"size": "big"})


def test_data_paths_become_absolute(tmp_path, monkeypatch):
    from sgm_pyro.config import absolute_data_paths
    monkeypatch.chdir(tmp_path)
    assert absolute_data_paths(tiny_config("sub/x.npz")).data.name == f"npz:{tmp_path}/sub/x.npz"
    assert absolute_data_paths(tiny_config("x", data={"name": "idx:../d"})).data.name == f"idx:{tmp_path.parent}/d"
    mnist = absolute_data_paths(tiny_config("x", data={"name": "mnist"}))
    assert mnist.data.root == f"{tmp_path}/data/mnist" and mnist.data.name == "mnist"
    assert absolute_data_paths(tiny_config("/abs/x.npz")).data.name == "npz:/abs/x.npz"
    assert absolute_data_paths(RunConfig()) == RunConfig()  # dsprites: nothing on disk


@pytest.mark.parametrize("text, value", [
    ("[inference]\naugment_scale = 0.5\n", 0.5),
    ("[inference]\naugment_scale = [0.5, 1, 1, 1, 1]\n", [0.5, 1.0, 1.0, 1.0, 1.0]),
    ("[inference.augment_scale]\ntx = 0.5\nty = 0.25\n", {"tx": 0.5, "ty": 0.25}),
])
def test_view_scale_per_coordinate_from_a_file(tmp_path, text, value):
    (tmp_path / "c.toml").write_text(text)
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.inference.augment_scale == value and to_dict(cfg)["inference"]["augment_scale"] == value
