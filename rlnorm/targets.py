"""Target networks and the critic passes of a TD update, safe for every normalization kind.

A target network is a slow copy of an online network that TD targets are computed with.
Two things go wrong with normalization layers, and this module fixes both:

- **Buffers filtered by name.** A target updated by Polyak averaging of *parameters* only
  keeps the running statistics it was created with; copying only buffers whose name looks
  like ``running_*`` misses ``num_batches_tracked`` (which drives Batch Renormalization's
  clip schedule) and any other kind's state. :meth:`TargetNetwork.update` averages every
  parameter and copies every buffer, whatever it is called.
- **Statistics of the wrong stream.** The target reads ``(s', a')`` with its online net's
  running statistics; if the online net only ever normalized ``(s, a)`` batches, those
  statistics describe the wrong stream (the source post's shared-statistics bug).
  :func:`critic_pass` offers the fixes as ``critic_streams``: ``"joint"`` normalizes
  ``(s, a)`` and ``(s', a')`` as one merged batch (so the statistics are the mixture both
  streams are read with), ``"per_stream"`` keeps one set of statistics per stream
  (``mlp(..., streams=2)``), ``"separate"`` is the textbook pass over ``(s, a)`` alone.

A target always runs with its norm layers in eval mode (its copied running statistics) and
without gradient: it is a fixed function between two updates, whatever mode the learner put
the agent's modules in.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from rlnorm.nets import joint_forward
from rlnorm.safety import frozen_statistics

#: How an online critic with a batch-dependent norm reads the two streams of a TD update.
CRITIC_STREAMS = ("joint", "separate", "per_stream")


class TargetNetwork(nn.Module):
    """A frozen copy of ``online``, moved towards it by :meth:`update`.

    ``forward`` runs the copy with every mode-dependent norm layer in eval mode and no
    gradient, so a target reads its (copied) running statistics and never updates them.
    """

    def __init__(self, online: nn.Module) -> None:
        super().__init__()
        self.net = copy.deepcopy(online).requires_grad_(False)

    def forward(self, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        with torch.no_grad(), frozen_statistics(self.net):
            return self.net(*args, **kwargs)

    @torch.no_grad()
    def update(self, online: nn.Module, tau: float) -> None:
        """Polyak-average the parameters, ``target <- (1 - tau) target + tau online``, and
        copy every buffer (running statistics, batch counters: all of them, by position in
        the module tree, not by name). ``tau = 1`` makes the target an exact copy."""
        params: list[torch.Tensor] = list(self.net.parameters())
        sources: list[torch.Tensor] = list(online.parameters())
        buffers, online_buffers = list(self.net.buffers()), list(online.buffers())
        if len(params) != len(sources) or len(buffers) != len(online_buffers):
            raise ValueError("the target and its online network differ in parameters or buffers")
        if params:  # one multi-tensor op each, not a loop of small ones
            torch._foreach_lerp_(params, sources, tau)
        if buffers:
            torch._foreach_copy_(buffers, online_buffers)


def critic_pass(
    critic: nn.Module,
    target: nn.Module,
    inputs: torch.Tensor,
    next_inputs: torch.Tensor,
    streams: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(critic(inputs), target(next_inputs))`` for a TD update, in train mode.

    ``inputs`` are the ``(s, a)`` rows the loss fits, ``next_inputs`` the ``(s', a')`` rows
    the target bootstraps from. ``streams`` decides which statistics the online critic's
    batch-dependent layers see, and so which running statistics the target inherits:

    - ``"joint"``: one train-mode pass over both streams merged; only the ``(s, a)`` half
      is fitted. The online critic is trained on the normalization the target reads with.
    - ``"separate"``: the ``(s, a)`` batch alone (the textbook update).
    - ``"per_stream"``: ``(s, a)`` through stream 0, ``(s', a')`` through stream 1 (without
      gradient, to keep its statistics current); the target reads with stream 1. The
      affine parameters of stream 1 get no gradient (no loss reads the online next-state
      stream), so they stay at their initial identity.
    """
    if streams == "joint":
        q, _ = joint_forward(critic, inputs, next_inputs)
        return q, target(next_inputs)
    if streams == "separate":
        return critic(inputs), target(next_inputs)
    if streams == "per_stream":
        with torch.no_grad():
            critic(next_inputs, stream=1)
        return critic(inputs, stream=0), target(next_inputs, stream=1)
    raise ValueError(f"critic streams {streams!r} is not one of {', '.join(CRITIC_STREAMS)}")


class StepCounter(nn.Module):
    """Gradient steps taken, as a buffer so that a checkpoint carries it: delayed updates
    (TD3's actor and targets, CrossQ's actor) resume on the same schedule."""

    steps: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def tick(self) -> int:
        """Count one gradient step; return how many were taken before it."""
        before = int(self.steps)
        self.steps += 1
        return before
