"""AdamW without importing torch's compiler stack: what a fresh ClientApp process saves every round.

torch marks the optimiser's methods for ``torch.compile``, and the marks import ``torch._dynamo`` (0.85 s alone on a
2-core machine with torch 2.13, 1.4 s under a profiler) on first use in a process:

* ``Adam.step`` is wrapped by ``_use_grad_for_differentiable``, whose wrapper imports ``torch._dynamo`` on every
  call to place a ``graph_break()`` (a no-op in eager mode) around the step, and sets the grad mode to the
  optimiser's ``differentiable`` flag (False here: no grad);
* ``add_param_group`` (so: creating any optimiser), ``state_dict``, ``load_state_dict`` and ``zero_grad`` are
  wrapped by ``torch._disable_dynamo``, whose wrapper imports ``torch._dynamo`` once to mark the method "never
  trace", and keeps the marked function in the wrapped function's ``__dynamo_disable`` attribute.

In deployment Flower starts a fresh ClientApp process for every message, so a site paid that import every round:
more than all its other work beyond training at the tiny setting (``benchmarks/site_round.py``). endofed never
compiles code that calls the optimiser (``pretrain.compile`` compiles the model's forward only), so the marks do
nothing here. :class:`EagerAdamW` calls the step beneath the first wrapper, under ``torch.no_grad()``, which is what
that wrapper does in eager mode for a non-differentiable optimiser (the step's hooks and profiler range, added by
``Optimizer`` itself, still run), and :func:`skip_dynamo_marks` lets the other four methods call their plain
function. Bitwise the same as ``torch.optim.AdamW`` (``tests/training/test_eager.py``). A torch whose wrappers look
different (checked by name) is left alone: the optimiser then works as torch's own, importing dynamo.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch

CACHE_ATTRIBUTE = "__dynamo_disable"  # where torch._compile._disable_dynamo keeps the function it calls
MARKED_METHODS = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")
STEP_WRAPPERS = {"_use_grad", "wrapper"}  # _use_grad_for_differentiable's, Optimizer.profile_hook_step's


def _unmarked(method: Callable[..., Any]) -> Callable[..., Any] | None:
    """The function behind a ``torch._disable_dynamo`` wrapper, or ``None`` if ``method`` is not one."""
    wrapped = getattr(method, "__wrapped__", None)
    code = getattr(method, "__code__", None)
    if wrapped is None or code is None or CACHE_ATTRIBUTE not in code.co_names:
        return None
    return wrapped


def skip_dynamo_marks() -> list[str]:
    """Let ``Optimizer``'s marked methods run without importing ``torch._dynamo`` (while it is not loaded).

    Returns:
        The methods that now call their plain function (empty: dynamo is loaded, or torch's wrappers changed).
    """
    if "torch._dynamo" in sys.modules:
        return []
    done = []
    for name in MARKED_METHODS:
        plain = _unmarked(getattr(torch.optim.Optimizer, name))
        if plain is not None:
            if getattr(plain, CACHE_ATTRIBUTE, None) is None:
                setattr(plain, CACHE_ATTRIBUTE, plain)
            done.append(name)
    return done


def plain_step(cls: type[torch.optim.Optimizer]) -> Callable[..., Any] | None:
    """``cls.step`` beneath torch's wrappers, if they are exactly the known ones ending in ``_use_grad``."""
    step = next((c.__dict__["step"] for c in cls.__mro__ if "step" in c.__dict__), None)
    names = []
    while step is not None and hasattr(step, "__wrapped__"):
        names.append(getattr(getattr(step, "__code__", None), "co_name", "?"))
        step = step.__wrapped__
    known = bool(names) and names[-1] == "_use_grad" and set(names) <= STEP_WRAPPERS
    return step if known else None


_ADAMW_STEP = plain_step(torch.optim.AdamW)


class EagerAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` whose ``step`` does not import ``torch._dynamo`` (see the module docstring).

    Not for code that ``torch.compile`` traces through the optimiser: there, torch's graph break is wanted.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        skip_dynamo_marks()
        super().__init__(*args, **kwargs)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One AdamW step (torch's own, beneath its dynamo wrapper)."""
        if _ADAMW_STEP is None or self.defaults.get("differentiable", False):
            return super().step(closure)
        with torch.no_grad():
            return _ADAMW_STEP(self, closure)
