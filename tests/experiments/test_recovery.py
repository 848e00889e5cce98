"""The recovery benchmark runner: a tiny end-to-end run, score_model on any generator, the parser."""

import argparse
import json
import math

import pytest
import torch

from sgm_pyro.data.recovery import RecoveryData, get_task
from sgm_pyro.experiments import recovery
from sgm_pyro.experiments.recovery import RecoverySettings, goals_met, score_model
from sgm_pyro.groups import AffineGroup

TINY = RecoverySettings(n_train=128, n_val=32, n_test=48, num_samples=2, batch_size=16, inference_steps=4,
                        prior_steps=3, num_draws=1)


class OracleModel:
    """Answers with the true poses composed with a constant (a perfect model with a rotated prototype)."""

    def __init__(self, group, data, offset):
        self.group, self.data, self.offset, self.cursor = group, data, offset, 0

    def eval(self):
        return self

    def infer_eta(self, x):
        eta = self.data.eta[self.cursor:self.cursor + x.shape[0]]
        self.cursor += x.shape[0]
        return torch.remainder(eta + self.offset + math.pi, 2 * math.pi) - math.pi

    def prototype(self, x):
        return x

    def sample_eta(self, x_hat, num_samples):
        eta = self.data.eta[self.cursor - x_hat.shape[0]:self.cursor] + self.offset
        return eta.expand(num_samples, *eta.shape)


def test_score_model_on_a_user_generator_of_a_perfect_model():
    task = get_task("mixed-glyphs")
    data = task.generate(400, seed=7)
    generator = lambda n, seed: data
    scores, aligned = score_model(OracleModel(task.make_group(), data, 1.0), generator, n=400, seed=0, batch_size=64)
    assert set(scores) == {"F", "L"}
    assert scores["F"]["pose"]["rot"]["w1"] < 1e-4 and scores["L"]["prior"]["rot"]["w1"] < 1e-4
    assert len(scores["F"]["modes"]["prior"]) == 4 and len(scores["L"]["modes"]["prior"]) == 1
    goals = goals_met("mixed-glyphs", scores)
    assert all(g["met"] for g in goals.values()) and len(goals) == 6
    assert aligned["F"]["prior"].shape == (16 * scores["F"]["n"], 1)  # 16 draws of p(η | x̂) per image


def test_goals_fail_for_a_wrong_model():
    task = get_task("c4-glyph")
    data = task.generate(400, seed=7)
    wrong = RecoveryData(data.images, torch.zeros_like(data.eta), data.labels, data.class_names, data.symmetry)
    scores, _ = score_model(OracleModel(task.make_group(), wrong, 0.0), data, batch_size=400)
    goals = goals_met("c4-glyph", scores)
    assert not goals["F prior modes"]["met"] and not goals["F pose rot W1 (deg)"]["met"]


def test_score_model_rejects_a_bad_generator():
    task = get_task("c4-glyph")
    model = OracleModel(AffineGroup(bounds=(0.25, 0.25, math.pi, 0.25, 0.25)), task.generate(8), 0.0)
    with pytest.raises(ValueError, match="coordinates"):
        score_model(model, task, n=8)
    with pytest.raises(ValueError, match="RecoveryData"):
        score_model(model, lambda n, seed: torch.zeros(n), n=8)


@pytest.mark.slow
def test_a_tiny_benchmark_run_writes_table_json_figures(tmp_path, monkeypatch):
    monkeypatch.setitem(recovery.SETTINGS, "c4-glyph", TINY)
    parser = argparse.ArgumentParser()
    recovery.add_recovery_parser(parser.add_subparsers())
    args = parser.parse_args(["recovery", "--task", "c4-glyph", "--out", str(tmp_path), "--seed", "2",
                              "--settings", '{"num_samples": 3, "net_hidden": [8]}'])
    status = args.func(args)
    assert status in (0, 1)  # four steps meet no goal; the run must still complete and report
    results = json.loads((tmp_path / "recovery.json").read_text())
    assert list(results) == ["c4-glyph"] and results["c4-glyph"]["seed"] == 2
    assert results["c4-glyph"]["settings"]["num_samples"] == 3 and results["c4-glyph"]["settings"]["net_hidden"] == [8]
    assert "rot" in results["c4-glyph"]["scores"]["F"]["prior"]
    assert results["c4-glyph"]["floor"]["F"]["rot"]["w1"] > 0  # two samples of the truth differ
    table = (tmp_path / "recovery.md").read_text()
    assert table.startswith("| task | class |") and "| c4-glyph | F |" in table
    assert (tmp_path / "c4-glyph.png").stat().st_size > 0 and (tmp_path / "c4-glyph.pt").exists()


def test_unknown_task_fails_before_fitting(tmp_path):
    with pytest.raises(ValueError, match="unknown recovery task"):
        recovery.run_benchmark(tmp_path, ["nope"])
    with pytest.raises(ValueError, match="unknown RecoverySettings fields"):
        recovery.run_benchmark(tmp_path, ["c4-glyph"], overrides={"colour_hed": "mlp"})


def test_sgm_benchmark_recovery_command_is_wired():
    from sgm_pyro.cli import build_parser

    args = build_parser().parse_args(["benchmark", "recovery", "--task", "c4-glyph", "--task", "color-affine",
                                      "--seed", "3"])
    assert args.func is recovery.run_from_args and args.task == ["c4-glyph", "color-affine"] and args.seed == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "recovery", "--task", "nope"])


def test_the_settings_choose_the_pose_heads():
    task = get_task("color-affine")
    default = recovery.build_model(task, recovery.SETTINGS["color-affine"]).inference
    assert (default.rotation_head, default.hue_head, default.colour_head) == ("circle", "equivariant", "set")
    harmonic = recovery.build_model(task, RecoverySettings(rotation_harmonics=(4, 2, 1), hue_head="real")).inference
    assert harmonic.equivariant.harmonics == (4, 2, 1) and harmonic.hue_head == "real"
    assert harmonic.equivariant_hue is None


def test_a_wider_pose_box_keeps_the_views_and_the_scores_on_the_tasks_box():
    task = get_task("color-affine")
    s = RecoverySettings(pose_box={"tx": 2.0, "log_sx": 4.0}, augment_scale=1.0)
    model = recovery.build_model(task, s)
    names, task_bounds = task.make_group().names, task.make_group().bounds
    assert torch.allclose(model.group.bounds, task_bounds * torch.tensor([2.0 if c == "tx" else 4.0 if c == "log_sx"
                                                                          else 1.0 for c in names]))
    views = model.group.per_coordinate(recovery.view_scale(task, s, 0.5))
    assert torch.allclose(views * model.group.bounds, 0.5 * task_bounds)  # the views: half the task's box
    assert recovery.view_scale(task, RecoverySettings(), 0.5) == 0.5
    # The same poses, scored through the task (fractions of its box) and through a plain callable
    # (fractions of the model's box): the W1s agree, the fractions differ by the widening.
    data = task.generate(64, seed=3)
    noisy = data.eta.clone()
    noisy[:, 0] += torch.linspace(-0.05, 0.05, 64)
    wrong = RecoveryData(data.images, noisy, data.labels, data.class_names, data.symmetry)
    by_task, _ = score_model(OracleModel(model.group, wrong, 0.0), task, n=64, seed=3, batch_size=64)
    by_callable, _ = score_model(OracleModel(model.group, wrong, 0.0), lambda n, seed: data, n=64, batch_size=64)
    for cname in by_task:
        a, b = by_task[cname]["pose"]["tx"], by_callable[cname]["pose"]["tx"]
        assert a["w1"] == pytest.approx(b["w1"]) and a["w1"] > 0
        assert a["fraction"] == pytest.approx(2 * b["fraction"])


def test_stage_kwargs_reach_the_stage_configs():
    # every stage setting of RecoverySettings is a field of the stage's config (SGM.fit rejects others)
    from sgm_pyro.inference import InferenceConfig, PriorConfig

    task = get_task("color-affine")
    s = recovery.SETTINGS["color-affine"]
    stage1, stage2 = recovery.stage_kwargs(task, s)
    assert stage2["prior_plain_draws"] == s.prior_plain_draws == 1 <= s.num_draws
    inf = InferenceConfig(**{k[len("inference_"):]: v for k, v in stage1.items()})
    prior = PriorConfig(**{k[len("prior_"):]: v for k, v in stage2.items()})
    assert (inf.isotropy_weight, prior.plain_draws, prior.num_draws) == (s.isotropy_weight, 1, s.num_draws)
    assert recovery.stage_kwargs(task, RecoverySettings())[1]["prior_plain_draws"] == 0
