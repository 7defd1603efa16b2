"""Observation normalization and reward scaling on the rollout side, done safely.

stable-baselines3's ``VecNormalize`` idea: keep a running mean and variance of observations
and feed the policy ``(obs - mean) / std``. The classic bugs are the BatchNorm bugs again:
statistics that keep updating during evaluation, and statistics that are not saved with
the weights. Here:

- the statistics are buffers of an :class:`ObservationNormalizer` module that the agent
  carries (``agent.obs_normalizer``), so they live in every checkpoint and are restored
  bit-exactly by :func:`rlnorm.load`;
- they change only through :meth:`ObservationNormalizer.update`, which only
  :meth:`rlnorm.rollout.RolloutManager.collect` calls, on training data; evaluation and
  :func:`rlnorm.predict` apply them frozen;
- the forward pass has no train/eval difference, so switching modes never changes it.

:class:`RewardScaler` divides rewards by the running standard deviation of the discounted
return (the scaling of Engstrom et al. 2020, "Implementation Matters"), for training only:
logged and evaluated returns are always the env's own.
"""

from __future__ import annotations

import torch
from torch import nn


class RunningMoments(nn.Module):
    """Running mean and variance of a stream of batches (Chan et al.'s parallel update),
    kept in float64 so that millions of updates do not lose precision."""

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge a batch ``(B, *shape)`` into the running moments."""
        batch = batch.to(torch.float64)
        n = batch.shape[0]
        batch_mean = batch.mean(0)
        batch_var = batch.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        # The first batch replaces the (0, 1) initialization; later ones merge with it.
        merged_var = (
            self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        ) / total
        self.mean.add_(delta * n / total)
        self.var.copy_(merged_var)
        self.count.copy_(total)


class ObservationNormalizer(nn.Module):
    """``clamp((obs - mean) / sqrt(var + eps), -clip, clip)`` with running moments.

    Args:
        shape: the shape of one observation.
        clip: bound on each normalized component (10, as stable-baselines3).
        eps: added to the variance, so a constant component does not divide by zero.
    """

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.moments = RunningMoments(shape)
        self.clip, self.eps = clip, eps

    def update(self, obs: torch.Tensor) -> None:
        """Fold a batch of raw observations into the statistics (training data only)."""
        self.moments.update(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalize a batch of raw observations; the statistics are not touched."""
        std = torch.sqrt(self.moments.var + self.eps)
        normalized = (obs.to(torch.float64) - self.moments.mean) / std
        return normalized.clamp(-self.clip, self.clip).to(obs.dtype)


class RewardScaler(nn.Module):
    """Divide rewards by the running standard deviation of the discounted return.

    The running return of each sub-env restarts at every episode end. Rewards are scaled,
    not centred, so the sign of a reward (and the meaning of a terminal state) is kept.
    """

    returns: torch.Tensor

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.moments = RunningMoments(())
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64))
        self.gamma, self.clip, self.eps = gamma, clip, eps

    @torch.no_grad()
    def forward(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Update with one step's rewards ``(num_envs,)`` and return them scaled."""
        self.returns.mul_(self.gamma).add_(reward.to(torch.float64))
        self.moments.update(self.returns)
        self.returns.masked_fill_(done, 0.0)
        scaled = reward.to(torch.float64) / torch.sqrt(self.moments.var + self.eps)
        return scaled.clamp(-self.clip, self.clip).to(reward.dtype)


__all__ = ["ObservationNormalizer", "RewardScaler", "RunningMoments"]
