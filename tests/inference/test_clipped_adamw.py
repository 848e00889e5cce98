"""Stage 2's optimiser: one AdamW with a global-norm clip, a step-indexed schedule, and a resumable state."""

import math

import pytest
import torch

from sgm_pyro.inference import PriorConfig, fit_prior
from sgm_pyro.inference.checkpoint import CheckpointError, load_checkpoint, save_atomic
from sgm_pyro.inference.clipped_adamw import ClippedAdamW
from sgm_pyro.inference.step_log import StepLog
from sgm_pyro.inference.progress import NonFiniteLossError


def quadratic_grads(params: dict, scale: float) -> None:
    for name, p in params.items():
        p.grad = scale * (p.detach() - 3.0) * (1 + len(name))


def test_one_step_is_adamw_after_clipping_by_the_global_norm():
    """Pyro's clip_args clipped each parameter on its own: a large gradient of one no longer shrinks the other."""
    a, b = torch.tensor([1.0, -2.0], requires_grad=True), torch.tensor([0.5], requires_grad=True)
    ref_a, ref_b = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    opt = ClippedAdamW(lr=0.1, weight_decay=0.01, clip_norm=1.0, lr_lambda=lambda t: 0.5 ** t)
    ref = torch.optim.AdamW([ref_a, ref_b], lr=0.1, weight_decay=0.01)
    for step in range(3):
        quadratic_grads({"a": a, "bb": b}, scale=10.0)
        quadratic_grads({"a": ref_a, "bb": ref_b}, scale=10.0)
        norm = torch.cat([ref_a.grad, ref_b.grad]).norm()
        assert norm > 1.0  # the clip is active
        for p in (ref_a, ref_b):
            p.grad *= 1.0 / (norm + 1e-6)
        ref.param_groups[0]["lr"] = 0.1 * 0.5 ** step
        opt.step({"bb": b, "a": a})  # any order: parameters are kept by name
        ref.step()
    torch.testing.assert_close(a, ref_a, rtol=0, atol=1e-6)
    torch.testing.assert_close(b, ref_b, rtol=0, atol=1e-6)


def run(opt: ClippedAdamW, params: dict, steps: range) -> None:
    for step in steps:
        quadratic_grads(params, scale=1.0)
        # "late" is created by the program only from step 2 on, as a lazily declared pyro.param
        opt.step({k: v for k, v in params.items() if k != "late" or step >= 2})


def test_resumed_optimiser_continues_exactly_through_a_cpu_checkpoint(tmp_path):
    def fresh():
        return {"w": torch.linspace(-1, 1, 4).requires_grad_(), "late": torch.zeros(2).requires_grad_()}
    schedule = lambda t: min(1.0, (t + 1) / 3)  # noqa: E731
    whole, first = fresh(), fresh()
    opt = ClippedAdamW(0.05, 1e-4, 2.0, schedule)
    run(opt, whole, range(6))
    part = ClippedAdamW(0.05, 1e-4, 2.0, schedule)
    run(part, first, range(4))
    save_atomic({"optimizer": part.state_dict(), "params": {k: v.detach() for k, v in first.items()}},
                tmp_path / "ckpt.pt")
    saved = load_checkpoint(tmp_path / "ckpt.pt")
    resumed = {k: v.clone().requires_grad_() for k, v in saved["params"].items()}
    again = ClippedAdamW(0.05, 1e-4, 2.0, schedule)
    again.load_state_dict(saved["optimizer"])
    run(again, resumed, range(4, 6))
    for k in whole:
        assert torch.equal(resumed[k], whole[k]), k


def test_an_older_optimiser_state_is_refused_clearly():
    with pytest.raises(CheckpointError, match="older format"):
        ClippedAdamW(0.1, 0.0, 1.0).load_state_dict({"prior$$$w": {}})


def test_a_nan_loss_is_named_by_its_step_when_values_are_read_in_bulk():
    history = {"step": [], "loss": []}
    log = StepLog(history, ("loss",), "stage 2", log_every=10)
    for step, value in enumerate([1.0, 0.5, math.nan, 0.25]):
        log.append(step, torch.tensor([value]))
    with pytest.raises(NonFiniteLossError, match="stage 2: the loss became nan at step 2"):
        log.flush()
    assert history == {"step": [0, 1], "loss": [1.0, 0.5]}  # the steps before the NaN are kept


def test_stage2_stops_at_the_first_nan_step_with_log_every_above_one(monkeypatch):
    import sgm_pyro
    from sgm_pyro.inference import stage2
    torch.manual_seed(0)
    group = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    model = sgm_pyro.SGM(group, (1, 8, 8), inference_kwargs={"hidden": [8]},
                         prior_kwargs={"feature_hidden": [8], "hidden": [8]})
    real, calls = stage2.svi_step, []

    def poisoned(*args):
        loss = real(*args)
        calls.append(1)
        return loss * math.nan if len(calls) == 6 else loss  # step index 5
    monkeypatch.setattr(stage2, "svi_step", poisoned)
    x = torch.rand(32, 1, 8, 8) * 2 - 1
    with pytest.raises(NonFiniteLossError, match="at step 5"):
        fit_prior(model.prior, model.inference, x, PriorConfig(steps=20, batch_size=8, log_every=4), progress=False)
    assert len(calls) == 8  # detected at the read after step 7, the end of the second logging period
