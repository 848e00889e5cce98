"""The rotated-MNIST experiment (SPEC 7) end to end on a tiny synthetic data set, and its table."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sgm_pyro.experiments.rotated_mnist import RotatedMnistConfig, markdown_table, merge_results, summarise

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rotated_mnist.py"


def tiny_digits(path: Path, n: int = 72) -> Path:
    """Bars of random length and angle, 16x16 uint8, label = quarter of the angle: a fake MNIST .npz."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16] - 7.5
    angle = rng.uniform(0, np.pi, n)
    length = rng.uniform(3, 6, n)
    along = xx[None] * np.cos(angle)[:, None, None] + yy[None] * np.sin(angle)[:, None, None]
    across = -xx[None] * np.sin(angle)[:, None, None] + yy[None] * np.cos(angle)[:, None, None]
    images = ((np.abs(along) < length[:, None, None]) & (np.abs(across) < 1.5)).astype(np.uint8) * 255
    np.savez(path, images=images, labels=(angle // (np.pi / 4)).astype(np.int64))
    return path


def run_example(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("rotated_mnist_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_end_to_end_writes_results_table_and_figure(tmp_path):
    data = tiny_digits(tmp_path / "tiny.npz")
    out = tmp_path / "out"
    code = run_example([
        "--data", str(data), "--out", str(out), "--thetas", "90", "--sizes", "32", "--seeds", "0",
        "--group", "rotation", "--n-test", "8", "--n-val", "8", "--inference-steps", "2", "--prior-steps", "2",
        "--num-draws", "1", "--sgm-batch-size", "16", "--inference-hidden", "16", "--prior-transforms", "1",
        "--vae-steps", "2", "--batch-size", "16", "--channels", "4,8", "--hidden", "16", "-K", "3",
        "--chunk-size", "2", "--threads", "1",
    ])
    assert code == 0
    record = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in record["rows"]] == ["VAE", "AugVAE", "InvVAE", "StdAugVAE"]
    for row in record["rows"]:
        assert math.isfinite(row["iwlb"]) and row["mse"] >= 0 and row["size"] == 32 and row["theta"] == 90
    inv = next(r for r in record["rows"] if r["model"] == "InvVAE")
    assert math.isfinite(inv["prototype_bound"])
    table = (out / "table.md").read_text()
    assert "IWLB θ=90°" in table
    # Each model's row reports its own measured IWLB and MSE (one seed: standard error 0), and the
    # InvVAE's prototype-space bound gets its own labelled row rather than standing in for the IWLB.
    for row in record["rows"]:
        assert f"| {row['model']} | 32 | {row['iwlb']:.1f} ± 0.0 (1) | {row['mse']:.4f} ± 0.0000 (1) |" in table
    assert f"| InvVAE prototype-space bound (secondary, not a density of x) | 32 | {inv['prototype_bound']:.1f} ± 0.0 (1) |" \
        in table
    assert (out / "iwlb_vs_size.png").stat().st_size > 0
    merged = merge_results([out], tmp_path / "merged")  # runs split over processes join back
    assert merged["rows"] == record["rows"] and (tmp_path / "merged" / "table.md").read_text() == table
    with pytest.raises(ValueError, match="overlap"):
        merge_results([out, out], tmp_path / "twice")


def test_table_is_mean_and_standard_error_over_seeds():
    rows = [{"theta": 15.0, "size": 100, "seed": s, "model": "VAE", "iwlb": v, "mse": 0.1}
            for s, v in enumerate([10.0, 14.0])]
    cell = summarise(rows)[15.0]["VAE"][100]
    assert cell["iwlb"][0] == pytest.approx(12.0)
    assert cell["iwlb"][1] == pytest.approx(2.0)  # stdev 2.83 / sqrt(2)
    assert cell["seeds"] == 2
    assert "12.0 ± 2.0 (2)" in markdown_table(summarise(rows))


@pytest.mark.parametrize("bad", [{"group": "shear"}, {"models": ("VAE", "GAN")}, {"thetas": (200.0,)},
                                 {"sizes": (10,), "batch_size": 64}, {"num_samples": 0}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        RotatedMnistConfig(**bad)
