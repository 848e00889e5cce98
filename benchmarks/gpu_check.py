"""The first script to run on a new GPU machine: every device path of the library, timed, with peak memory.

    python benchmarks/gpu_check.py                 # CUDA when available, else the CPU
    python benchmarks/gpu_check.py --quick         # tiny sizes: a smoke test (a few seconds on a CPU)
    python benchmarks/gpu_check.py --device cpu

In order: a warm-up fit (allocator, kernel selection), stage-1 steps, stage-2 steps, AugVAE steps,
InvVAE steps, an IWLB at K = 300, a user-written prior program (its free ``pyro.param`` must live
on the device), a kill-and-resume (a fit in a child process killed with SIGKILL after a
checkpoint, resumed here, compared with an uninterrupted fit; ``--quick`` interrupts in-process
unless ``--sigkill``), and, when two GPUs exist, a two-process nccl fit. Each line gives seconds, images/s and
peak memory (``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the rise of the process's
peak resident set, which only grows: 0 means it fitted in memory already reserved). Every output
is checked to be on the requested device and finite; the script ends with "device check passed".
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, pick_device, sync  # noqa: E402

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
from pyro.distributions import constraints  # noqa: E402

import sgm_pyro  # noqa: E402
from sgm_pyro.inference import fit_sgm  # noqa: E402


@dataclass
class Sizes:
    image: int
    batch: int
    steps: int
    k: int
    pose_hidden: tuple[int, ...]
    flow_hidden: tuple[int, ...]
    vae_channels: tuple[int, ...]


FULL = Sizes(image=64, batch=256, steps=20, k=300, pose_hidden=(512, 256), flow_hidden=(128, 128),
             vae_channels=(64, 128))
QUICK = Sizes(image=16, batch=8, steps=2, k=300, pose_hidden=(16,), flow_hidden=(8,), vae_channels=(4, 8))


class Meter:
    """Times a part, measures its peak memory, prints one line."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        print(f"{'part':<40} {'seconds':>8} {'images/s':>11} {'peak MiB':>9}")

    def _rss_mib(self) -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def __call__(self, label: str, n_images: int, fn):
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        rss = self._rss_mib()
        start = time.perf_counter()
        out = fn()
        sync(self.device)
        seconds = time.perf_counter() - start
        peak = ((torch.cuda.max_memory_allocated(self.device) - base) / 2**20 if self.device.type == "cuda"
                else self._rss_mib() - rss)
        print(f"{label:<40} {seconds:8.2f} {n_images / seconds:11.1f} {peak:9.1f}", flush=True)
        return out


def on_device(t: torch.Tensor, device: torch.device, what: str) -> None:
    assert t.device.type == device.type, f"{what} on {t.device}, expected {device}"
    assert torch.isfinite(t).all(), f"{what} is not finite"


def make_sgm(s: Sizes, prior=None) -> sgm_pyro.SGM:
    group = sgm_pyro.AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=True)
    pool = {"input_size": 32} if s.image > 32 else {}
    prior_kwargs = {} if prior is not None else dict(feature_hidden=(256,) if s.image > 32 else (16,),
                                                     hidden=s.flow_hidden, **pool)
    return sgm_pyro.SGM(group, (1, s.image, s.image), prior, inference_kwargs=dict(hidden=s.pose_hidden, **pool),
                        prior_kwargs=prior_kwargs)


def user_prior(x_hat):
    """The README's prior program: a free pyro.param whose initial value is a CPU tensor."""
    scale = pyro.param("rot_scale", torch.ones(5), constraint=constraints.positive)
    return pyro.sample("eta", dist.Normal(0.0, scale).expand([x_hat.shape[0], 5]).to_event(1))


def seeded_sgm(s: Sizes) -> sgm_pyro.SGM:
    """The same initial networks every time (the killed, the resumed and the uninterrupted fit)."""
    torch.manual_seed(1)
    return make_sgm(s)


def fit_kwargs(s: Sizes, device) -> dict:
    return dict(inference_steps=4, prior_steps=4, batch_size=s.batch, device=device, progress=False,
                checkpoint_every=1, seed=3)


def child_fit(args) -> None:
    """The process killed by :func:`kill_and_resume`: a fit with a checkpoint after every step."""
    s = QUICK if args.quick else FULL
    data = torch.load(args.child, weights_only=True)
    fit_sgm(seeded_sgm(s), data, checkpoint_dir=Path(args.child).parent / "run", **fit_kwargs(s, args.device))


def kill_and_resume(s: Sizes, data: torch.Tensor, device: torch.device, quick: bool, sigkill: bool) -> float:
    """Largest difference between a killed-then-resumed fit and an uninterrupted one (0 on a CPU)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        if not sigkill:  # in-process: stop the fit in stage 1 as a crash would, right after a checkpoint
            class Killed(Exception):
                pass
            real = sgm_pyro.inference.sgm_training.save_atomic

            def save_then_die(obj, path):
                real(obj, path)
                if obj["stage"]["stage"] == "inference" and obj["stage"]["step"] == 2:
                    raise Killed
            sgm_pyro.inference.sgm_training.save_atomic = save_then_die
            try:
                fit_sgm(seeded_sgm(s), data, checkpoint_dir=run, **fit_kwargs(s, device))
            except Killed:
                pass
            finally:
                sgm_pyro.inference.sgm_training.save_atomic = real
        else:
            torch.save(data.cpu(), Path(tmp) / "data.pt")
            child = subprocess.Popen([sys.executable, __file__, "--child", str(Path(tmp) / "data.pt"),
                                      "--device", str(device)] + (["--quick"] if quick else []))
            deadline = time.monotonic() + 300
            while child.poll() is None and time.monotonic() < deadline:
                try:
                    if torch.load(run / "checkpoint.pt", weights_only=True)["stage"]["step"] >= 2:
                        break
                except Exception:  # not written yet, or being replaced
                    pass
                time.sleep(0.05)
            if child.poll() is not None:
                raise RuntimeError(f"the child fit ended (status {child.returncode}) before it could be killed")
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        resumed, whole = seeded_sgm(s), seeded_sgm(s)
        fit_sgm(resumed, data, checkpoint_dir=run, resume=True, **fit_kwargs(s, device))
        fit_sgm(whole, data, checkpoint_dir=Path(tmp) / "whole", **fit_kwargs(s, device))
    a, b = resumed.state_dict(), whole.state_dict()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--quick", action="store_true", help="tiny sizes and budgets: a smoke test")
    p.add_argument("--sigkill", action=argparse.BooleanOptionalAction, default=None,
                   help="kill a child process with SIGKILL (default; --quick: interrupt in-process instead)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_fit(args)
    device = pick_device(args.device)
    s = QUICK if args.quick else FULL
    torch.manual_seed(0)
    print(f"machine: {machine(device)}; {s.image}x{s.image} images, batch {s.batch}, {s.steps} steps per part")
    x, _ = sgm_pyro.data.dsprites(max(64, 4 * s.batch), seed=0, device=device)
    x = torch.nn.functional.interpolate(x, size=(s.image, s.image), mode="area") if s.image != 64 else x
    meter = Meter(device)
    model = make_sgm(s)
    b, n = s.batch, s.batch * s.steps
    meter("warm-up (2 + 2 steps)", 4 * b, lambda: model.fit(x, inference_steps=2, prior_steps=2, batch_size=b,
                                                            device=device, progress=False))
    meter("stage 1 (invariance)", n, lambda: model.fit(x, inference_steps=s.steps, prior_steps=0, batch_size=b,
                                                       device=device, progress=False))
    meter("stage 2 (prior)", n, lambda: model.fit(x, inference_steps=0, prior_steps=s.steps, batch_size=b,
                                                  device=device, progress=False))
    on_device(model.resample(x[:8], 2), device, "resamples")

    vae_kwargs = dict(channels=s.vae_channels, hidden=32 if args.quick else 256)
    aug = sgm_pyro.models.AugVAE((1, s.image, s.image), model, **vae_kwargs)
    meter("AugVAE (SGM resamples, ELBO)", n, lambda: aug.fit(x, steps=s.steps, batch_size=b, device=device,
                                                             progress=False))
    on_device(next(aug.parameters()), device, "AugVAE parameters")
    inv = sgm_pyro.models.InvVAE(model, **vae_kwargs)
    meter("InvVAE (honest bound, ELBO)", n, lambda: inv.fit(x, steps=s.steps, batch_size=b, device=device,
                                                            progress=False))
    m = min(16, x.shape[0])
    bound = meter(f"IWLB of the SGM, K={s.k} (images)", m, lambda: sgm_pyro.iwlb(
        model.model, model.guide, x[:m], num_samples=s.k, chunk_size=100, seed=0))
    on_device(bound, device, "IWLB")

    custom = make_sgm(s, prior=user_prior)
    meter("user prior program (stage 2)", n, lambda: custom.fit(x, inference_steps=1, prior_steps=s.steps,
                                                                batch_size=b, device=device, progress=False))
    on_device(custom.pyro_param_state["params"]["rot_scale"], device, "the user's pyro.param")
    print(f"  fitted rot_scale: {[round(v, 3) for v in custom.prior_params()['rot_scale'].tolist()]}")

    diff = meter("kill and resume (4 + 4 steps, 3 fits)", 3 * 8 * b,
                 lambda: kill_and_resume(s, x, device, args.quick,
                                         not args.quick if args.sigkill is None else args.sigkill))
    print(f"  resumed vs uninterrupted: max |difference| {diff:.3g}"
          + ("" if device.type == "cuda" else " (the CPU must give 0)"))
    assert device.type == "cuda" or diff == 0.0, "a resumed CPU run must repeat the uninterrupted one exactly"

    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        script = Path(__file__).resolve().parent / "distributed_throughput.py"
        meter("two processes, nccl (distributed_throughput)", 0, lambda: subprocess.run(
            [sys.executable, str(script), "--procs", "1", "2", "--device", "cuda", "--batch", str(b), "--steps", "4"],
            check=True))
    else:
        print("two-process nccl run: skipped (needs 2 GPUs)")
    print("device check passed")


if __name__ == "__main__":
    main()
