"""examples/demo_seeds.py: the per-seed summary of the dSprites demo, on a stub run."""

import importlib.util
import json
import math
from pathlib import Path

import sgm_pyro

ROOT = Path(__file__).resolve().parents[2]


def load_example():
    spec = importlib.util.spec_from_file_location("demo_seeds", ROOT / "examples" / "demo_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(path: Path, seed: int, worst: float) -> Path:
    path.mkdir()
    group = sgm_pyro.AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=True)
    sgm_pyro.SGM(group, (1, 64, 64), "box", inference_kwargs=dict(hidden=(4,), input_size=8,
                                                                   rotation_head="circle")).save(path / "model.pt")
    stats = {"com_x": {"relative": worst}, "com_y": {"relative": 0.01}, "area": {"relative": 0.02}}
    metrics = {"config": {"seed": seed}, "seconds": {"fit": 100.0 + seed},
               "recovery": {"max_relative": worst, "per_shape": {"square": stats}},
               "hearts": {"rotation_std_deg_mean": 2.5, "resampled_middle_fraction": 0.05}}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_the_summary_reports_every_seed_the_mean_and_the_range(tmp_path):
    demo_seeds = load_example()
    rows = [demo_seeds.summarise(fake_run(tmp_path / f"s{s}", s, w)) for s, w in ((0, 0.04), (1, 0.08))]
    # an untrained network with the box prior: the squares' rotation density is the box's, wide
    assert all(r["square_rotation_std_deg"] > 60 for r in rows)
    table = demo_seeds.table(rows)
    line = next(ln for ln in table.splitlines() if ln.startswith("| worst_marginal |"))
    assert line == "| worst_marginal | ≤ 0.05 | 0.04 | 0.08 | 0.06 | 0.04–0.08 |"
    assert "| square_rotation_std_deg | ≥ 20 |" in table
