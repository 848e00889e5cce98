"""Where a model's ``fit`` and bound methods find their loops, without models importing inference.

The package reads downwards (STYLE): a Pyro program never imports the loop that trains it. Yet a
researcher expects ``model.fit(...)`` and ``vae.log_likelihood(x)``. So the loops register
themselves here when :mod:`sgm_pyro.inference` is imported (``sgm_pyro/__init__.py`` does that,
and Python imports the package root before any ``sgm_pyro.models`` module), and the user-facing
methods look them up by name:

* ``"sgm"``: ``fit_sgm(model, images, **options)``
* ``"vae"``: ``fit_vae(model, images, **options)``
* ``"iwlb"``: ``iwlb(model, guide, *args, num_particles=..., ...)``
"""

from __future__ import annotations

from collections.abc import Callable

_LOOPS: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn`` the loop that the models' methods call by ``name``."""
    def decorate(fn: Callable) -> Callable:
        _LOOPS[name] = fn
        return fn
    return decorate


def loop(name: str) -> Callable:
    """The registered loop ``name``; a clear error when :mod:`sgm_pyro.inference` was never imported."""
    try:
        return _LOOPS[name]
    except KeyError:
        raise RuntimeError(f"no {name!r} loop is registered: import sgm_pyro.inference (or sgm_pyro) before "
                           "calling fit / log_likelihood on a model") from None
