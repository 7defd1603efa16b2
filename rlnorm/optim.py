"""torch's Adam, without importing ``torch.compile``'s machinery in a process that never
compiles.

torch.optim keeps ``torch.compile`` from tracing into an optimizer's bookkeeping by wrapping
its methods (``add_param_group``, ``zero_grad``, ``state_dict``, ``load_state_dict``, the
functional ``adam``) in ``torch._disable_dynamo``, which imports ``torch._dynamo`` on its
first call, and ``Adam.step`` imports it on every call. That import costs about 1.6 s, once
per process: more than a short ``rlnorm train``, an ``rlnorm eval`` or a sweep trial spends
on anything else but importing torch. Disabling a compiler that is not loaded does nothing,
so :class:`Adam` calls the unwrapped methods while ``torch._dynamo`` is not imported, and
torch's own wrapped ones once it is. The arithmetic is torch's, to the bit (tested).

:func:`adam` builds one with torch's fused kernel where torch has one for the parameters'
device: one kernel over every tensor, where the ``foreach`` path runs about ten
multi-tensor ops, each a loop of small kernels on a CPU.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch

# torch.optim deletes its submodules' names; the module is still imported.
_functional = importlib.import_module("torch.optim.adam")


def _compiler_loaded() -> bool:
    return "torch._dynamo" in sys.modules


def _unwrapped(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` under torch's wrappers (``functools.wraps`` keeps it as ``__wrapped__``)."""
    return inspect.unwrap(method)


def _call_functional_adam_unwrapped() -> None:
    """Let ``Adam.step``'s call of the functional ``torch.optim.adam.adam`` skip the import
    of ``torch._dynamo`` while it is not loaded.

    ``torch._disable_dynamo`` caches its disabled function on the wrapped function as
    ``__dynamo_disable``; this puts there a stand-in that calls the function as is until
    ``torch._dynamo`` is imported, then removes itself, so torch's wrapper builds the real
    one. Where torch names its cache otherwise, the stand-in is never read and nothing
    changes but the import time.
    """
    functional = _unwrapped(_functional.adam)
    if functional is _functional.adam or hasattr(functional, "__dynamo_disable"):
        return

    def until_compiler_loads(*args: Any, **kwargs: Any) -> Any:
        if _compiler_loaded():
            del functional.__dynamo_disable  # type: ignore[attr-defined]
            return _functional.adam(*args, **kwargs)
        return functional(*args, **kwargs)

    functional.__dynamo_disable = until_compiler_loads  # type: ignore[attr-defined]


class Adam(torch.optim.Adam):
    """``torch.optim.Adam``, whose methods skip ``torch._dynamo``'s import while no
    compiler is loaded (see the module docstring)."""

    def __init__(self, params: Any, **defaults: Any) -> None:
        _call_functional_adam_unwrapped()
        super().__init__(params, **defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if _compiler_loaded():
            return super().add_param_group(param_group)
        return _unwrapped(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if set_to_none:  # torch's loop, less its profiler range
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad = None
            return None
        if _compiler_loaded():
            return super().zero_grad(set_to_none)
        return _unwrapped(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        if _compiler_loaded():
            return super().state_dict()
        return _unwrapped(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if _compiler_loaded():
            return super().load_state_dict(state_dict)
        return _unwrapped(torch.optim.Optimizer.load_state_dict)(self, state_dict)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if _compiler_loaded():
            # torch's step without the hooks that torch.optim puts around a class's step:
            # this class's step has its own, which must run once.
            step: Any = torch.optim.Adam.step
            return (step.__wrapped__ if getattr(step, "hooked", False) else step)(self, closure)
        # What torch's wrapper does around the step, less its graph breaks for the compiler.
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return _unwrapped(torch.optim.Adam.step)(self, closure)


def adam(params: Any, **defaults: Any) -> Adam:
    """:class:`Adam` with torch's fused kernel (CPU from torch 2.4, CUDA), else its
    multi-tensor ``foreach`` path, which CPU parameters do not get by default. The two
    differ only in rounding."""
    params = list(params)
    try:
        return Adam(params, fused=True, **defaults)
    except RuntimeError:  # no fused kernel for this device in this torch
        return Adam(params, foreach=True, **defaults)


def clip_grad_norm_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (the 2-norm), to the bit, in
    four multi-tensor ops: torch's spends as long again grouping the gradients by device
    and dtype and moving each norm to the first one's device, on every call."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
    return total
