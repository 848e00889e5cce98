"""The README's first example: fit a small SGM to procedural dSprites, with budgets sized for a laptop CPU.

    .venv/bin/python examples/quickstart.py

Small budgets (300 + 100 steps of batch 64, 32x32 network inputs) show the workflow, not the
quality of the fit: ``sgm demo`` (docs/results.md) is the budget that recovers dSprites' symmetries.
The device is chosen automatically (CUDA when present, else the CPU). The README gives the
measured time.
"""

import math
import time

import sgm_pyro
from sgm_pyro.data import dsprites

start = time.perf_counter()
# --- the README example starts here
x, latents = dsprites(2048, seed=0)                  # (2048, 1, 64, 64) in [-1, 1], background -1
group = sgm_pyro.AffineGroup(bounds=(0.75, 0.75, math.pi, 0.75, 0.75), squash=True)  # (tx, ty, rot, log_sx, log_sy)
model = sgm_pyro.SGM(group, image_shape=(1, 64, 64),
                     inference_kwargs=dict(input_size=32, hidden=(512, 256), rotation_head="moments"),
                     prior_kwargs=dict(input_size=32, feature_hidden=(256,), hidden=(128, 128)))
model.fit(x, inference_steps=300, prior_steps=100, batch_size=64, device="auto", progress=False)

test, _ = dsprites(8, seed=1)
x_hat = model.prototype(test)                        # invariant prototypes (8, 1, 64, 64)
eta = model.infer_eta(test)                          # poses (8, 5): test ≈ group.apply(x_hat, eta)
etas = model.sample_eta(x_hat, 100)                  # (100, 8, 5) draws from p(η | x̂)
print("learned rotation spread per image (degrees):", [round(math.degrees(s), 1) for s in etas[..., 2].std(0).tolist()])
sgm_pyro.analysis.resample_grid(test, model.resample(test, 6), path="quickstart.png")  # natural augmentations
# --- the README example ends here
print(f"done in {time.perf_counter() - start:.0f} s on {model.device}; wrote quickstart.png")
