"""The rotated-MNIST protocol resumes from its cached cells, refuses other settings, and draws the figure."""

from __future__ import annotations

import json

import pytest
import torch

from sgm_pyro.experiments import rotated_mnist
from sgm_pyro.experiments.rotated_mnist import budget_config, run_rotated_mnist
from sgm_pyro.experiments.rotated_mnist_report import PAPER_IWLB, data_efficiency_figure, summarise


def bars(n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = -torch.ones(n, 1, 12, 12)
    for i in range(n):
        r = int(torch.randint(2, 10, (1,), generator=g))
        x[i, 0, r, 2:10] = 1.0
    return x


def tiny(**kw):
    base = dict(thetas=(90.0,), sizes=(16,), seeds=(0,), n_test=8, n_val=8, group="rotation", inference_steps=2,
                prior_steps=2, num_draws=1, sgm_batch_size=8, inference_hidden=(8,), prior_feature_hidden=(8,),
                prior_hidden=(8,), prior_transforms=1, max_epochs=2, patience=1, batch_size=8, channels=(2, 4),
                hidden=8, num_samples=3, chunk_size=3, eval_batch=8)
    return budget_config("full", **{**base, **kw})


def test_a_rerun_skips_finished_cells_and_reuses_the_cached_sgm(tmp_path, monkeypatch):
    x = bars()
    first = run_rotated_mnist(x, None, tmp_path, tiny(models=("VAE", "AugVAE")), log=lambda s: None)
    assert [r["model"] for r in first["rows"]] == ["VAE", "AugVAE"]
    assert (tmp_path / "sgm" / "theta90_n16_seed0.pt").is_file()
    row = first["rows"][0]
    assert row["history"]["best_epoch"] == row["best_epoch"] and len(row["history"]["val_value"]) >= 1
    built, fitted = [], []
    real_build = rotated_mnist.build_vae
    monkeypatch.setattr(rotated_mnist, "build_vae", lambda name, *a: built.append(name) or real_build(name, *a))
    monkeypatch.setattr(rotated_mnist.SGM, "fit", lambda *a, **k: fitted.append(1))
    second = run_rotated_mnist(x, None, tmp_path, tiny(models=("VAE", "AugVAE", "InvVAE")), log=lambda s: None)
    assert built == ["InvVAE"] and fitted == []  # only the new cell ran, on the SGM from the cache
    assert second["rows"][:2] == json.loads(json.dumps(first["rows"]))
    assert len(second["sessions"]) == 2 and (tmp_path / "iwlb_vs_size.png").stat().st_size > 0
    with pytest.raises(ValueError, match="other settings.*lr"):
        run_rotated_mnist(x, None, tmp_path, tiny(lr=0.5), log=lambda s: None)


def test_budgets_and_the_paper_values_in_the_figure(tmp_path):
    quick, full = budget_config("quick"), budget_config("full")
    assert full.sizes == (1750, 3500, 7000) and full.thetas == (15.0, 90.0, 180.0) and full.num_samples == 300
    assert full.sigma == quick.sigma == "calibrated" and quick.num_samples < full.num_samples
    assert budget_config("paper").sizes == (12500, 25000, 37500, 50000)
    with pytest.raises(ValueError, match="budget"):
        budget_config("huge")
    rows = [{"theta": t, "size": s, "seed": 0, "model": "VAE", "iwlb": 800.0 + s / 10, "mse": 0.1}
            for t in (15.0, 180.0) for s in (1750, 7000)]
    path = data_efficiency_figure(summarise(rows), tmp_path / "fig.png")
    assert path.stat().st_size > 0
    assert PAPER_IWLB[180.0]["AugVAE"][0.25] > PAPER_IWLB[180.0]["VAE"][1.0]  # the claim the figure shows


def test_mnist_dir_is_the_one_flag_for_the_papers_protocol(tmp_path, monkeypatch):
    """``--mnist-dir`` reads the four IDX files, uses the official test split and the paper's sizes."""
    import importlib.util
    from pathlib import Path

    import numpy as np

    from sgm_pyro.data import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 12)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    path = Path(__file__).resolve().parents[2] / "examples" / "rotated_mnist.py"
    spec = importlib.util.spec_from_file_location("rotated_mnist_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    seen = {}

    def fake_run(images, labels, out, cfg, **kw):
        seen.update(images=images, cfg=cfg, **kw)
        Path(out).mkdir(parents=True)
        (Path(out) / "table.md").write_text("")
        return {"rows": [], "wall_s": 0.0}

    monkeypatch.setattr(example, "run_rotated_mnist", fake_run)
    assert example.main(["--mnist-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    cfg = seen["cfg"]
    assert cfg.sizes == (12500, 25000, 37500, 50000) and cfg.n_val == 10000 and cfg.n_test == 10000
    assert seen["images"].shape == (30, 1, 28, 28) and seen["test_images"].shape == (12, 1, 28, 28)
