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
    kept in float64 so that millions of updates do not lose precision.

    With ``members`` (a seed population, :mod:`rlnorm.population`) every statistic gets a
    leading member dimension and each member folds in only its own rows.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...], members: int | None = None) -> None:
        super().__init__()
        lead = () if members is None else (members,)
        self.members = members
        self.register_buffer("mean", torch.zeros((*lead, *shape), dtype=torch.float64))
        self.register_buffer("var", torch.ones((*lead, *shape), dtype=torch.float64))
        self.register_buffer("count", torch.zeros(lead, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge a batch ``(B, *shape)`` into the running moments; with members, ``(K * B,
        *shape)``, member ``k``'s rows being the ``k``-th block of ``B``."""
        batch = batch.to(torch.float64)
        count = self.count
        if self.members is not None:  # member k's rows along dim 1, its count broadcast
            batch = batch.reshape(self.members, -1, *batch.shape[1:])
            count = count.reshape(-1, *[1] * (self.mean.dim() - 1))
        axis = 0 if self.members is None else 1
        n = batch.shape[axis]
        batch_mean = batch.mean(axis)
        batch_var = batch.var(axis, unbiased=False)
        total = count + n
        delta = batch_mean - self.mean
        # The first batch replaces the (0, 1) initialization; later ones merge with it.
        merged_var = (self.var * count + batch_var * n + delta**2 * count * n / total) / total
        self.mean.add_(delta * n / total)
        self.var.copy_(merged_var)
        self.count.copy_(total.reshape(self.count.shape))


class ObservationNormalizer(nn.Module):
    """``clamp((obs - mean) / sqrt(var + eps), -clip, clip)`` with running moments.

    Args:
        shape: the shape of one observation.
        clip: bound on each normalized component (10, as stable-baselines3).
        eps: added to the variance, so a constant component does not divide by zero.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        clip: float = 10.0,
        eps: float = 1e-8,
        members: int | None = None,
    ) -> None:
        super().__init__()
        self.moments = RunningMoments(shape, members)
        self.clip, self.eps = clip, eps

    def update(self, obs: torch.Tensor) -> None:
        """Fold a batch of raw observations into the statistics (training data only)."""
        self.moments.update(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalize a batch of raw observations; the statistics are not touched. With
        members, member ``k`` normalizes the ``k``-th block of rows with its own."""
        mean, var = self.moments.mean, self.moments.var
        members = self.moments.members
        raw = obs.to(torch.float64)
        if members is not None:
            raw, mean, var = raw.reshape(members, -1, *obs.shape[1:]), mean[:, None], var[:, None]
        normalized = (raw - mean) / torch.sqrt(var + self.eps)
        return normalized.clamp(-self.clip, self.clip).reshape(obs.shape).to(obs.dtype)


class RewardScaler(nn.Module):
    """Divide rewards by the running standard deviation of the discounted return.

    The running return of each sub-env restarts at every episode end. Rewards are scaled,
    not centred, so the sign of a reward (and the meaning of a terminal state) is kept.
    """

    returns: torch.Tensor

    def __init__(
        self,
        num_envs: int,
        gamma: float,
        clip: float = 10.0,
        eps: float = 1e-8,
        members: int | None = None,
    ) -> None:
        super().__init__()
        self.moments = RunningMoments((), members)
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64))
        self.gamma, self.clip, self.eps = gamma, clip, eps

    @torch.no_grad()
    def forward(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Update with one step's rewards ``(num_envs,)`` and return them scaled (with
        members, each block of sub-envs by its member's statistics)."""
        self.returns.mul_(self.gamma).add_(reward.to(torch.float64))
        self.moments.update(self.returns)
        self.returns.masked_fill_(done, 0.0)
        var = self.moments.var
        if self.moments.members is not None:
            var = var.repeat_interleave(len(self.returns) // self.moments.members)
        scaled = reward.to(torch.float64) / torch.sqrt(var + self.eps)
        return scaled.clamp(-self.clip, self.clip).to(reward.dtype)


__all__ = ["ObservationNormalizer", "RewardScaler", "RunningMoments"]
