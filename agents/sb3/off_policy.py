"""The off-policy adapters: ``sb3:SAC``, ``sb3:TD3``, ``sb3:CrossQ`` (sb3-contrib) and
``sb3:DQN``.

The learner fills rlnorm's replay buffer (:attr:`SB3OffPolicy.replay`, on the env's device
and checkpointed with the run); SB3's ``train(gradient_steps, batch_size)`` samples it
through a :class:`ReplayView` in SB3's layout. SB3 keeps exploration outside its policy, so
:meth:`act` implements SB3's: ``action_noise_std`` (SB3's ``NormalActionNoise`` in the
scaled action space) and DQN's epsilon-greedy with SB3's schedule, a coin per sub-env so
one env's action never depends on the others in the batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlnorm.agent import ActOutput, OffPolicy
from rlnorm.agents.sb3.agent import SB3Agent
from rlnorm.agents.sb3.configs import SB3CrossQConfig, SB3DQNConfig, SB3SACConfig, SB3TD3Config
from rlnorm.agents.sb3.policies import dqn_policy, sac_policy, td3_policy
from rlnorm.env import space_shape
from rlnorm.replay import ReplayBuffer


class ReplayView:
    """What SB3's off-policy ``train()`` samples from: minibatches of rlnorm's replay buffer
    (which stays on the env's device and is checkpointed with the run) in SB3's layout.

    Box actions are scaled to [-1, 1], as SB3 stores them for its squashed policies;
    discrete actions become a column of indices; ``dones`` are terminations only, since a
    truncated transition's next observation is its episode's final one (the bootstrap).
    """

    def __init__(self, replay: ReplayBuffer, action_space: gym.spaces.Space) -> None:
        from stable_baselines3.common.type_aliases import ReplayBufferSamples

        self.replay, self.samples = replay, ReplayBufferSamples
        self.box = isinstance(action_space, gym.spaces.Box)
        if isinstance(action_space, gym.spaces.Box):
            self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=replay.device)
            self.high = torch.as_tensor(
                action_space.high, dtype=torch.float32, device=replay.device
            )

    def sample(self, batch_size: int, env: Any = None) -> Any:
        """``batch_size`` transitions as SB3's ``ReplayBufferSamples`` (``env``, SB3's
        VecNormalize, is unused: rlnorm normalizes observations before storing them)."""
        t = self.replay.sample(batch_size)
        if self.box:
            actions = 2.0 * (t.actions - self.low) / (self.high - self.low) - 1.0
        else:
            actions = t.actions.reshape(-1, 1)
        return self.samples(
            observations=t.obs.float(),
            actions=actions,
            next_observations=t.next_obs.float(),
            dones=t.terminated.float().reshape(-1, 1),
            rewards=t.rewards.float().reshape(-1, 1),
        )


class SB3OffPolicy(SB3Agent):
    """SAC, TD3, CrossQ and DQN: the learner fills :attr:`replay` (rlnorm's), SB3's
    ``train(gradient_steps, batch_size)`` samples it through a :class:`ReplayView`."""

    action_spaces: ClassVar[tuple[type[gym.spaces.Space], ...]] = (gym.spaces.Box,)

    def _before_setup(self) -> None:
        cfg = self.config
        self.replay = ReplayBuffer(
            cfg.buffer_size, self.observation_space, self.action_space, self.device
        )
        self.model.replay_buffer = ReplayView(self.replay, self.action_space)

    @property
    def collection(self) -> OffPolicy:
        return OffPolicy(self.config.train_freq, self.config.learning_starts)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        scaled = self.model.policy._predict(obs, deterministic=deterministic)
        noise = self.config.action_noise_std
        if noise > 0 and not deterministic:
            scaled = (scaled + noise * torch.randn_like(scaled)).clamp(-1.0, 1.0)
        return ActOutput(self.low + 0.5 * (scaled + 1.0) * (self.high - self.low))

    def update(self, batch: ReplayBuffer, progress: float) -> dict[str, float]:
        steps = self.config.gradient_steps
        if steps == -1:
            steps = batch.last_added_steps
        return self._train(progress, gradient_steps=steps, batch_size=self.config.batch_size)


class SB3ActorCritic(SB3OffPolicy):
    """SAC, TD3 and CrossQ: an actor and a critic, each with its own SB3 optimizer."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The actor's and critic's optimizers, and the entropy coefficient's when learned."""
        policy = self.model.policy
        optimizers = {"actor": policy.actor.optimizer, "critic": policy.critic.optimizer}
        if getattr(self.model, "ent_coef_optimizer", None) is not None:
            optimizers["ent_coef"] = self.model.ent_coef_optimizer
        return optimizers


class SB3MaxEntropy(SB3ActorCritic):
    """SAC and CrossQ: a squashed Gaussian actor with an entropy coefficient, learned by
    default."""

    def _policy_class(self, base: type) -> type:
        return sac_policy(base, self.kind)

    def _extra_kwargs(self) -> dict[str, Any]:
        # The default target entropy, -dim(A): SB3 reads its "auto" off an env, which an
        # adapter does not have.
        return {"target_entropy": -float(np.prod(space_shape(self.action_space)))}

    def _after_setup(self) -> None:
        """Move a learned log entropy coefficient (a bare tensor of the SB3 algorithm) into
        the state module as a parameter, so checkpoints carry it, and rebuild its optimizer
        over that parameter with SB3's settings."""
        model = self.model
        if model.log_ent_coef is None:
            return
        self.state.log_ent_coef = nn.Parameter(model.log_ent_coef.detach().clone())
        model.log_ent_coef = self.state.log_ent_coef
        optimizer = model.ent_coef_optimizer
        model.ent_coef_optimizer = type(optimizer)([model.log_ent_coef], **optimizer.defaults)


class SB3SAC(SB3MaxEntropy):
    """stable-baselines3's SAC."""

    name = "sb3:SAC"
    algorithm = "SAC"
    Config = SB3SACConfig

    def _target_pairs(self) -> list[tuple[str, nn.Module, nn.Module]]:
        policy = self.model.policy
        return [("batch_norm_stats", policy.critic, policy.critic_target)]


class SB3CrossQ(SB3MaxEntropy):
    """sb3-contrib's CrossQ (no target networks)."""

    name = "sb3:CrossQ"
    algorithm = "CrossQ"
    package = "sb3_contrib"
    Config = SB3CrossQConfig

    def _extra_policy_kwargs(self) -> dict[str, Any]:
        return {"batch_norm": False}  # its Batch Renorm gives way to rlnorm's norm


class SB3TD3(SB3ActorCritic):
    """stable-baselines3's TD3."""

    name = "sb3:TD3"
    algorithm = "TD3"
    Config = SB3TD3Config

    def _policy_class(self, base: type) -> type:
        return td3_policy(base, self.kind)

    def _target_pairs(self) -> list[tuple[str, nn.Module, nn.Module]]:
        policy = self.model.policy
        return [
            ("critic_batch_norm_stats", policy.critic, policy.critic_target),
            ("actor_batch_norm_stats", policy.actor, policy.actor_target),
        ]


class SB3DQN(SB3OffPolicy):
    """stable-baselines3's DQN, epsilon-greedy with SB3's schedule."""

    name = "sb3:DQN"
    algorithm = "DQN"
    Config = SB3DQNConfig
    action_spaces: ClassVar[tuple[type[gym.spaces.Space], ...]] = (gym.spaces.Discrete,)

    def _policy_class(self, base: type) -> type:
        return dqn_policy(base, self.kind)

    def _target_pairs(self) -> list[tuple[str, nn.Module, nn.Module]]:
        policy = self.model.policy
        return [("batch_norm_stats", policy.q_net, policy.q_net_target)]

    def _after_setup(self) -> None:
        self.state.register_buffer(
            "n_calls", torch.zeros((), dtype=torch.int64, device=self.device)
        )
        self.state.register_buffer(
            "exploration_rate", torch.ones((), dtype=torch.float32, device=self.device)
        )

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"q_net": self.model.policy.optimizer}

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        greedy = self.model.policy._predict(obs, deterministic=True)
        if deterministic:
            return ActOutput(greedy)
        explore = torch.rand(greedy.shape, device=greedy.device) < self.state.exploration_rate
        random = torch.randint_like(greedy, gym.spaces.flatdim(self.action_space))
        return ActOutput(torch.where(explore, random, greedy))

    def update(self, batch: ReplayBuffer, progress: float) -> dict[str, float]:
        # SB3 calls _on_step after every env step it collects: it counts the step, updates
        # the target every target_update_interval steps and moves epsilon along its schedule.
        # Here the count starts with the first update, after the warm-up steps.
        model = self.model
        model._current_progress_remaining = 1.0 - progress
        model._n_calls = int(self.state.n_calls)
        for _ in range(batch.last_added_steps):
            model._on_step()
        self.state.n_calls.fill_(model._n_calls)
        self.state.exploration_rate.fill_(model.exploration_rate)
        return super().update(batch, progress)
