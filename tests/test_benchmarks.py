"""The benchmark scripts a GPU user runs first: they must work on the CPU, and never print an impossible figure."""

import importlib.util
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_every_part_on_the_cpu_in_quick_mode(capsys):
    load("gpu_check").main(["--quick", "--device", "cpu"])
    out = capsys.readouterr().out
    for part in ("warm-up", "stage 1", "stage 2", "AugVAE", "InvVAE", "IWLB of the SGM, K=300", "user prior program",
                 "kill and resume"):
        line = next(line for line in out.splitlines() if line.startswith(part))
        images_per_s, peak_mib = (float(v) for v in line.split()[-2:])
        assert images_per_s > 0 and peak_mib >= 0, line
    assert "max |difference| 0 " in out and out.rstrip().endswith("device check passed")


def test_stage_throughput_refuses_a_figure_above_the_measured_peak(capsys):
    table = load("stage_throughput").Table(peak=100.0)
    table.row(28, "1", 512, seconds=1.0, flops=int(50e9), note="plausible")
    table.row(28, "2", 512, seconds=1.0, flops=int(150e9), note="impossible")
    lines = capsys.readouterr().out.splitlines()
    assert "50.0" in lines[0] and "50.0%" in lines[0]
    assert "REFUSED" in lines[1] and "150.0 GFLOP/s exceeds the measured peak 100.0" in lines[1]
    assert table.refused == 1


def test_stage_throughput_counts_the_flops_of_a_matrix_product():
    bench = load("stage_throughput")
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert bench.flops_of(lambda: a @ b) == 2 * 64 * 32 * 16


def test_distributed_benchmark_starts_no_more_processes_than_gpus(monkeypatch, capsys):
    """On a one-GPU machine the second process failed in torch.cuda.set_device(1)."""
    bench = load("distributed_throughput")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert bench.usable_process_counts([1, 2, 4], torch.device("cuda")) == [1]
    assert "skipping [2, 4]" in capsys.readouterr().err
    assert bench.usable_process_counts([1, 2], torch.device("cpu")) == [1, 2]


def test_moment_angle_accuracy_prints_a_row_per_shape_within_its_bounds(capsys):
    load("moment_angle_accuracy").main(["--n", "300"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| square", "| ellipse", "| heart"))]
    assert len(rows) == 3
    for row in rows:
        spread = float(row.split("|")[2].strip().rstrip("°"))
        assert spread < 2.0, row  # within 2° of the true orientation, modulo the shape's symmetry


def test_stage1_breakdown_counts_the_products_a_step_runs():
    """Forward and weight gradient for every layer, input gradient for all but the first (its input is data)."""
    seconds, flops = load("stage1_breakdown").matmul_seconds(8, [4, 3, 2], torch.device("cpu"), min_time=0.01)
    assert seconds > 0
    assert flops == 2 * (2 * 8 * 4 * 3) + 3 * (2 * 8 * 3 * 2)


def test_stage1_breakdown_ablates_on_a_copy():
    """The ablated MLP has the identity where GELU was, the same weights elsewhere, and the original is untouched."""
    from sgm_pyro.nn import MLP
    net = MLP(6, (5, 4), 3)
    cut = load("stage1_breakdown").without(net, (torch.nn.GELU,))
    assert [type(m) for m in cut] == [torch.nn.Identity if isinstance(m, torch.nn.GELU) else type(m) for m in net]
    assert any(isinstance(m, torch.nn.GELU) for m in net)
    x = torch.randn(7, 6)
    plain = torch.nn.Sequential(*(m for m in net if not isinstance(m, torch.nn.GELU)))
    torch.testing.assert_close(cut(x), plain(x))
    cut[1].weight.data.zero_()
    assert net[1].weight.abs().sum() > 0


def test_stage1_alternatives_compute_what_they_replace():
    """The measured alternatives are only a fair comparison if they give the step's values and gradients."""
    alt = load("stage1_alternatives")
    from sgm_pyro.nn import MLP
    torch.manual_seed(0)
    alt.CHUNK_BYTES = 5 * 8 * 3  # three rows of 5 float64 per chunk, so that 7 rows need a partial last chunk
    net = MLP(6, (5, 4), 3).double()
    for m in net:
        if isinstance(m, torch.nn.LayerNorm):  # off the (1, 0) initialisation, so the γ, β gradients are tested
            torch.nn.init.normal_(m.weight, 1.0, 0.3), torch.nn.init.normal_(m.bias, 0.0, 0.3)
    x = torch.randn(7, 6, dtype=torch.float64)

    def value_and_grads(forward):
        net.zero_grad()
        out = forward(x)
        out.square().sum().backward()
        return [out.detach()] + [p.grad.clone() for p in net.parameters()]
    plain = value_and_grads(net)
    for got, want in zip(value_and_grads(lambda v: alt.chunked_forward(net, v)), plain):
        torch.testing.assert_close(got, want)
    w, b = torch.randn(9, 6, dtype=torch.float64, requires_grad=True), torch.randn(9, dtype=torch.float64, requires_grad=True)
    xi = x.clone().requires_grad_()
    for wide in (w, w[:4].detach().clone().requires_grad_()):  # a widening and a narrowing layer
        bias = b[: wide.shape[0]]
        got = torch.autograd.grad(alt.WidenedLinear.apply(xi, wide, bias).sin().sum(), (xi, wide, b))
        want = torch.autograd.grad(torch.nn.functional.linear(xi, wide, bias).sin().sum(), (xi, wide, b))
        for g_, w_ in zip(got, want):
            torch.testing.assert_close(g_, w_)
    a, c = torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(alt.DotMSE.apply(a, c), torch.nn.functional.mse_loss(a, c))
    torch.testing.assert_close(torch.autograd.grad(alt.DotMSE.apply(a, c), a)[0],
                               torch.autograd.grad(torch.nn.functional.mse_loss(a, c), a)[0])
    images, grid = torch.randn(4, 1, 9, 9), torch.rand(4, 9, 9, 2) * 2.4 - 1.2  # samples beyond the frame too
    torch.testing.assert_close(alt.ringed_sample(images, grid, align_corners=True),
                               torch.nn.functional.grid_sample(images, grid, padding_mode="zeros", align_corners=True))
