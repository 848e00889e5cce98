"""What the training loops switch off after their first step, so a step makes no needless host syncs.

Every read of a device value by Python (``.item()``, ``float(t)``, ``if tensor:``) waits until the
GPU has finished all queued work. User input is checked once, at the public boundary and in the
first training step; later steps run with the value checks of Pyro, of torch distributions and
of the groups switched off (``tests/test_host_syncs.py`` counts what is left).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from ..models.trusted import trusted_inputs


@contextmanager
def checks_on_first_step() -> Iterator[Callable[[], None]]:
    """Value checks stay on until the yielded ``step_done()`` is first called, then are off.

    Usage: ``with checks_on_first_step() as step_done: for ...: train(); step_done()``. The first
    step meets every check (a user's prior program with a wrong support fails there, clearly);
    the others run in :func:`trusted_inputs`.
    """
    with ExitStack() as stack:
        entered = []

        def step_done() -> None:
            if not entered:
                stack.enter_context(trusted_inputs())
                entered.append(True)
        yield step_done
