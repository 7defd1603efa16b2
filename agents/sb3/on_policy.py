"""The on-policy adapters, ``sb3:PPO`` and ``sb3:A2C``.

rlnorm collects the rollout (eval mode, through its rollout manager); :meth:`SB3OnPolicy.update`
lays it out as an SB3 ``RolloutBuffer`` and runs SB3's own ``train()`` on it. With a
mode-dependent norm, ``norm_update: frozen`` (the default, as in rlnorm's PPO) trains the
function that acted (every BatchNorm on its running statistics) and then refreshes the
statistics with one train-mode pass; ``batch`` is SB3's textbook train mode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlnorm import norm as norms
from rlnorm.agent import ActOutput, OnPolicy
from rlnorm.agents.sb3.agent import SB3Agent
from rlnorm.agents.sb3.configs import SB3A2CConfig, SB3PPOConfig
from rlnorm.agents.sb3.policies import actor_critic_policy
from rlnorm.env import space_shape
from rlnorm.rollout import Rollout


class SB3OnPolicy(SB3Agent):
    """PPO and A2C: rlnorm collects ``n_steps`` per sub-env; SB3's ``train()`` updates on
    an SB3 ``RolloutBuffer`` filled from that rollout."""

    action_spaces = (gym.spaces.Discrete, gym.spaces.Box)
    critic_key = "vf"

    def _policy_class(self, base: type) -> type:
        return actor_critic_policy(base, self.kind)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.model.policy.optimizer}

    @property
    def collection(self) -> OnPolicy:
        return OnPolicy(self.config.n_steps)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        sample, value, log_prob = self.model.policy(obs, deterministic=deterministic)
        # SB3 clips a Gaussian sample to the bounds for the env, and learns on the sample.
        box = isinstance(self.action_space, gym.spaces.Box)
        actions = sample.clamp(self.low, self.high) if box else sample
        return ActOutput(
            actions, {"sample": sample, "value": value.flatten(), "log_prob": log_prob}
        )

    def _after_setup(self) -> None:
        if self.config.norm_statistics == "cumulative":
            norms.use_cumulative_statistics(self.model.policy)

    def update(self, batch: Rollout, progress: float) -> dict[str, float]:
        buffer = self.model.rollout_buffer = self._rollout_buffer(batch)
        # SB3 draws minibatch permutations from numpy's global generator: seeded from torch's
        # (which the learner seeds and checkpoints), a seeded run is reproducible and resumable.
        np.random.seed(int(torch.randint(2**31 - 1, ())))
        policy = self.model.policy
        if self.config.norm_update == "batch":
            return self._train(progress)
        # Frozen: SB3's loss runs on the very function that acted (running statistics), so
        # PPO's first ratio is exactly 1; then one train-mode pass over the rollout refreshes
        # the statistics for the next rollout, as rlnorm's own PPO does.
        policy.freeze_statistics = True
        try:
            metrics = self._train(progress)
        finally:
            policy.freeze_statistics = False
        obs = torch.as_tensor(buffer.observations, device=policy.device)  # train() flattened it
        obs = obs.reshape(-1, *space_shape(self.observation_space))[: buffer.buffer_size]
        if obs.shape[0] > 1:  # a train-mode BatchNorm pass needs a batch
            policy.set_training_mode(True)
            with torch.no_grad():
                policy.get_distribution(obs)
                policy.predict_values(obs)
        return metrics

    def _minibatch_size(self) -> int | None:
        """Minibatch size of SB3's ``train()`` (None: the whole rollout)."""
        return None

    def _rollout_buffer(self, batch: Rollout) -> Any:
        """An SB3 RolloutBuffer holding the rollout's transitions, with SB3's GAE computed.

        rlnorm's rollout is ``(T, N)`` with autoreset steps that are no transitions; SB3's
        buffer has every row a transition. The valid steps of each sub-env are laid end to
        end as one stream (one "env" of ``n`` steps, so the minibatches mix all sub-envs, as
        SB3's do). Where a segment is cut off without a termination (a truncated episode, or
        the rollout's end) the value of the next observation is folded into its reward and
        the next transition starts an episode: what SB3 does for truncation, so its
        GAE recursion bootstraps correctly and never runs across two segments.
        """
        from stable_baselines3.common.buffers import RolloutBuffer

        gamma = self.config.gamma
        values = batch.extras["value"].float()
        cut = batch.terminated | batch.truncated
        cut[-1] = True
        rewards = batch.rewards.float() + gamma * values[1:] * (cut & ~batch.terminated)
        keep = batch.valid.T.reshape(-1)

        def stream(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(0, 1).reshape(-1, *x.shape[2:])[keep]

        cuts = stream(cut)
        n = cuts.shape[0]
        buffer = RolloutBuffer(
            n,
            self.observation_space,
            self.action_space,
            device=self.model.device,
            gae_lambda=self.config.gae_lambda,
            gamma=gamma,
            n_envs=1,
        )
        fields = {
            "observations": stream(batch.obs[:-1]),
            "actions": stream(batch.extras["sample"][:-1]),
            "rewards": stream(rewards),
            "episode_starts": torch.cat([cuts.new_ones(1), cuts[:-1]]),
            "values": stream(values[:-1]),
            "log_probs": stream(batch.extras["log_prob"][:-1]),
        }
        for name, value in fields.items():
            array = getattr(buffer, name)
            array[:] = value.cpu().numpy().reshape(array.shape)
        buffer.pos, buffer.full = n, True
        buffer.compute_returns_and_advantage(
            last_values=torch.zeros(1), dones=np.ones(1, dtype=bool)
        )
        size = self._minibatch_size()
        if self.kind.batch_dependent and size is not None and n > 1 and n % size == 1:
            # The last minibatch would hold one sample, which has no batch statistics: leave
            # the stream's last transition out of this update (SB3 draws indices < buffer_size).
            buffer.buffer_size = n - 1
        return buffer


class SB3PPO(SB3OnPolicy):
    """stable-baselines3's PPO."""

    name = "sb3:PPO"
    algorithm = "PPO"
    Config = SB3PPOConfig

    def _minibatch_size(self) -> int | None:
        return self.config.batch_size


class SB3A2C(SB3OnPolicy):
    """stable-baselines3's A2C."""

    name = "sb3:A2C"
    algorithm = "A2C"
    Config = SB3A2CConfig
