"""Seconds per stage survive a resume, so a resumed run reports the images/s it really had."""

import math

import torch

import sgm_pyro


def tiny_model():
    group = sgm_pyro.AffineGroup(bounds=(math.pi,), generators=("rot",))
    return sgm_pyro.SGM(group, (1, 8, 8), inference_kwargs=dict(hidden=(16,)),
                        prior_kwargs=dict(feature_hidden=(8,), hidden=(8, 8), transforms=1))


def images(n=64):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[:, :, 0] = -1  # a background row: not mistaken for [0, 1] images
    return x


def test_stage_seconds_and_steps_are_carried_by_the_checkpoint(tmp_path):
    model = tiny_model()
    first = model.fit(images(), inference_steps=6, prior_steps=0, batch_size=8, progress=False,
                      checkpoint_dir=tmp_path, checkpoint_every=2)["timing"]
    assert first["inference_steps"] == 6 and first["inference"] > 0
    # a new process resumes after stage 1 and runs stage 2: stage 1's seconds must not restart at zero
    again = model.fit(images(), inference_steps=6, prior_steps=3, batch_size=8, progress=False,
                      checkpoint_dir=tmp_path, checkpoint_every=2, resume=True)["timing"]
    assert again["inference_steps"] == 6
    assert again["inference"] >= 0.9 * first["inference"], (first, again)
    assert again["prior_steps"] == 3 and again["prior"] > 0
