"""Headless plotting and seeded randomness for the analysis tests."""

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: the tests run without a display

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
