"""The library's AdamW: torch's fused kernel where it exists, the same step as the foreach kernel."""

import pytest
import torch

from sgm_pyro.inference.optimizers import adamw, fused_supported, load_adamw_state, step_counter


def test_fused_where_torch_has_the_kernel_foreach_elsewhere():
    cpu = [torch.nn.Parameter(torch.randn(3))]
    assert fused_supported(cpu) and adamw(cpu, lr=1e-3).defaults["fused"]
    meta = [torch.nn.Parameter(torch.randn(3, device="meta"))]
    assert not fused_supported(meta)
    opt = adamw(meta, lr=1e-3)
    assert not opt.defaults["fused"] and opt.defaults["foreach"]
    assert not fused_supported([torch.nn.Parameter(torch.randn(3).half())])
    assert not fused_supported([])


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_the_fused_step_is_adamw(weight_decay):
    torch.manual_seed(0)
    init = [torch.randn(5, 4), torch.randn(4)]
    fused = [torch.nn.Parameter(t.clone()) for t in init]
    plain = [torch.nn.Parameter(t.clone()) for t in init]
    opt_f = adamw(fused, lr=1e-2, weight_decay=weight_decay)
    opt_p = torch.optim.AdamW(plain, lr=1e-2, weight_decay=weight_decay, foreach=False)
    assert opt_f.defaults["fused"]
    for step in range(5):
        grads = [torch.randn_like(t) for t in init]
        for params, opt in ((fused, opt_f), (plain, opt_p)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b, t in zip(fused, plain, init):
        assert not torch.equal(a, t)  # it moved
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_state_saved_by_the_fused_kernel_resumes_where_there_is_none():
    cpu = [torch.nn.Parameter(torch.randn(3))]
    opt = adamw(cpu, lr=1e-2)
    cpu[0].grad = torch.ones(3)
    opt.step()
    saved = opt.state_dict()
    assert saved["param_groups"][0]["fused"]
    meta = [torch.nn.Parameter(torch.randn(3, device="meta"))]
    resumed = adamw(meta, lr=1e-2)
    load_adamw_state(resumed, saved)
    assert not resumed.param_groups[0]["fused"] and resumed.param_groups[0]["foreach"]
    state = resumed.state[meta[0]]
    assert state["step"].device.type == "cpu" and float(state["step"]) == 1.0  # foreach keeps it on the CPU
    assert state["exp_avg"].device.type == "meta"
    plain = [torch.nn.Parameter(torch.randn(3))]
    foreach = torch.optim.AdamW(plain, lr=1e-2, foreach=True)
    plain[0].grad = torch.ones(3)
    foreach.step()
    back = adamw([torch.nn.Parameter(torch.randn(3))], lr=1e-2)
    load_adamw_state(back, foreach.state_dict())
    assert back.param_groups[0]["fused"] and not back.param_groups[0]["foreach"]


def test_step_counters_follow_the_kernel():
    step, p = torch.tensor(4.0), torch.zeros(2, device="meta")
    assert step_counter(step, p, fused=True).device.type == "meta"
    assert step_counter(step, p, fused=False) is step
