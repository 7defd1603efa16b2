"""Adam over a population's stacked parameters, with a step count per member.

One ``torch.optim.Adam`` over ``[K, ...]`` parameters is K independent Adams as long as the
members step together: Adam is elementwise, and its only shared quantity, the step count
behind the bias corrections, is then the same for all. A PPO population breaks that: a
member whose rollout kept fewer valid steps may split it into fewer minibatches than the
others, and must skip the remaining gradient steps as its own run never takes them
(:mod:`rlnorm.minibatches`). :class:`MemberAdam` keeps each member's count (``step`` is
``[K]`` in every parameter's state) and :func:`stepping` lets only some members step, so
member ``k``'s weights, moments and count stay exactly those of the run ``--seed k``.

The update is torch's Adam (no weight decay, AMSGrad or maximize: the agents use none):
its fused kernel while the members' counts are equal and the optimizer was built fused
(:func:`rlnorm.optim.adam`), else written with ``torch._foreach`` ops as torch's own
multi-tensor path is, with each member's count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from rlnorm.errors import ConfigError
from rlnorm.optim import Adam


class MemberAdam(Adam):
    """``torch.optim.Adam`` over member-stacked parameters (leading dimension K, the same
    for all), each member with its own step count."""

    def __init__(self, params: Any, **defaults: Any) -> None:
        super().__init__(params, **defaults)
        # Per group, the count tensor last checked and whether every member was at one
        # count: a host sync only when the counts were replaced or stepping() held some
        # members back.
        self._even: dict[int, tuple[torch.Tensor, bool]] = {}
        for group in self.param_groups:
            unsupported = [k for k in ("weight_decay", "amsgrad", "maximize") if group[k]]
            if unsupported or group["differentiable"]:
                raise ConfigError(
                    f"a population's Adam supports no {', '.join(unsupported) or 'differentiable'}"
                )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            grads = [p.grad for p in params]
            states = [self._state_of(p) for p in params]
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            if group["fused"] and self._counts_even(index, steps[0]):
                # Members that always stepped together (off-policy agents; PPO members with
                # equal minibatch counts): torch's fused kernel, as each member's single
                # run uses, with their one count.
                torch._fused_adam_(
                    params, grads, exp_avgs, exp_avg_sqs, [], [steps[0][0]] * len(params),
                    lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0,
                    eps=group["eps"], amsgrad=False, maximize=False,
                )  # fmt: skip
                continue
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
            # Per member: -lr / (1 - beta1^t) and sqrt(1 - beta2^t), shaped to broadcast. A
            # group's parameters step together (stepping() puts back an idle member's whole
            # state), so their counts are one: computed once, viewed per parameter rank.
            step = steps[0]
            step_size = -group["lr"] / (1 - torch.pow(beta1, step))
            correction = (1 - torch.pow(beta2, step)).sqrt()
            views: dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
            for p in params:
                if (p.dim(), p.dtype) not in views:
                    shape = (p.shape[0],) + (1,) * (p.dim() - 1)
                    views[p.dim(), p.dtype] = (
                        step_size.view(shape).to(p.dtype),
                        correction.view(shape).to(p.dtype),
                    )
            step_sizes = [views[p.dim(), p.dtype][0] for p in params]
            corrections = [views[p.dim(), p.dtype][1] for p in params]
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denoms, corrections)
            torch._foreach_add_(denoms, group["eps"])
            updates = torch._foreach_div(exp_avgs, denoms)
            torch._foreach_mul_(updates, step_sizes)
            torch._foreach_add_(params, updates)
        return loss

    def _counts_even(self, group: int, step: torch.Tensor) -> bool:
        """Whether every member's count in ``group`` equals the first's (``step``: ``[K]``)."""
        checked = self._even.get(group)
        if checked is None or checked[0] is not step:
            checked = self._even[group] = (step, bool((step == step[0]).all()))
        return checked[1]

    def _state_of(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros(param.shape[0], dtype=torch.float64, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state


@contextmanager
def stepping(optimizer: torch.optim.Optimizer, active: torch.Tensor | None) -> Iterator[None]:
    """Inside, ``optimizer.step()`` moves only the members where ``active`` (``[K]``) is
    True: every other member's weights and optimizer state (moments, step count) are put
    back as they were, as if it had not stepped. ``None``: every member steps."""
    if active is None:
        yield
        return
    if not isinstance(optimizer, MemberAdam):
        raise TypeError(f"only MemberAdam keeps a step count per member, not {optimizer!r}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:  # a state created by this step would escape the restore below
        optimizer._state_of(p)
    tensors = params + [t for p in params for t in optimizer.state.get(p, {}).values()]
    idle = ~active
    saved = [(t, t[idle].clone()) for t in tensors if t.dim() and t.shape[0] == active.shape[0]]
    yield
    with torch.no_grad():
        for tensor, before in saved:
            tensor[idle] = before
    optimizer._even.clear()  # the idle members' counts fell behind
