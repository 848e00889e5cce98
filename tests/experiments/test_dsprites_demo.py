"""The main job end to end at a tiny budget: every promised file is written and metrics are sane."""

import json

from sgm_pyro.experiments.dsprites_demo import DemoConfig, run_demo

FIGURES = ("prototypes.png", "marginals.png", "heart_rotation.png", "resamples.png", "eta_densities.png",
           "training.png")


def test_demo_writes_figures_metrics_report_and_resumes(tmp_path):
    cfg = DemoConfig(inference_steps=3, prior_steps=3, batch_size=16, n_val=32, n_test=96, num_resamples=2,
                     net_hidden=(32,), prior_feature_hidden=(16,), prior_hidden=(16,), prior_transforms=1,
                     checkpoint_every=2)
    metrics = run_demo(tmp_path, cfg, device="cpu", progress=False, log=lambda *_: None)
    for name in FIGURES + ("metrics.json", "report.md", "config.json", "model.pt", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["invariance"]["invariance_error"] == metrics["invariance"]["invariance_error"] > 0
    for shape in ("square", "ellipse", "heart"):
        assert set(saved["recovery"]["per_shape"][shape]) >= {"com_x", "com_y", "area"}
    assert 0 <= saved["hearts"]["resampled_middle_fraction"] <= 1
    assert saved["images_per_second"]["stage1"] > 0
    assert "Hearts" in (tmp_path / "report.md").read_text()
