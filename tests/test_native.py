"""Building the compiled kernels: where ninja is looked for, and what a failed build does."""

import os
import sys
import warnings

import pytest
import torch

from sgm_pyro import native
from sgm_pyro.nn import MLP


def test_the_environments_own_ninja_is_put_on_path(monkeypatch, tmp_path):
    """`make test` runs .venv/bin/python without activating the venv, where pip put ninja."""
    (tmp_path / "ninja").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    monkeypatch.setenv("PATH", "/somewhere/else")
    native._find_ninja()
    assert os.environ["PATH"].split(os.pathsep) == [str(tmp_path), "/somewhere/else"]


def test_a_ninja_already_on_path_is_left_alone(monkeypatch, tmp_path):
    (tmp_path / "ninja").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(native.shutil, "which", lambda name: "/usr/bin/ninja")
    monkeypatch.setenv("PATH", "/somewhere/else")
    native._find_ninja()
    assert os.environ["PATH"] == "/somewhere/else"


def test_a_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_state", {"enabled": True, "ops": None, "error": None})
    monkeypatch.setattr(native, "SOURCES", [tmp_path / "missing.cpp"])
    with pytest.warns(UserWarning, match="could not be built"):
        assert not native.available()
    assert native.error()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call says nothing
        assert not native.available()
        net = MLP(4, (6,), 2)
        assert net(torch.randn(3, 4)).shape == (3, 2)


def test_the_build_is_named_for_the_cpu():
    """A home directory shared by different machines keeps one -march=native build per kind of CPU."""
    avx512 = "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: sse avx2 avx512f\n"
    avx2 = "processor\t: 0\nmodel name\t: EPYC\nflags\t\t: sse avx2\n"
    second_core = avx512 + avx512.replace(": 0", ": 1")  # more cores of the same kind: the same build
    assert native._cpu_digest(avx512) == native._cpu_digest(second_core)
    assert native._cpu_digest(avx512) != native._cpu_digest(avx2)
