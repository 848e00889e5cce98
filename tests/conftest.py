"""Shared test setup: pytest puts this folder on ``sys.path`` (it has no ``__init__.py``), so tests in
any subfolder can import the helpers kept here, e.g. ``from sync_counter import SyncCounter``."""

import os

import pytest

from sgm_pyro import native


@pytest.fixture
def native_kernels():
    """The compiled CPU kernels, built; whether they are enabled is restored afterwards.

    `make install` provides the compiler and ninja, so a failed build fails the test instead of
    skipping it; only an explicit ``SGM_PYRO_FUSED_KERNELS=0`` skips.
    """
    if os.environ.get(native.ENV) == "0":
        pytest.skip(f"{native.ENV}=0 disables the compiled kernels")
    assert native.available(), f"the compiled kernels did not build: {native.error()}"
    before = native.is_enabled()
    yield native
    native.set_enabled(before)
