"""The only path from a policy to an environment.

Every forward pass that chooses an action runs inside :func:`rlnorm.acting`: eval mode
(BatchNorm uses its running statistics, so a lone state is not normalized to zero and no
state's action depends on the others in its batch) and inference mode (no autograd graph).
Rollouts are stored as tensors on the env's device.

Environments follow gymnasium's next-step autoreset: the step after an episode ends only
resets that sub-env. Such a step is not a transition, so every stored step carries a
``valid`` flag, and the observation returned when an episode ends (its final observation)
is the next stored observation, ready for bootstrapping a truncated return.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlnorm.agent import ActOutput, Agent, act_in_eval_mode, normalize_obs
from rlnorm.draws import GLOBAL, Draws
from rlnorm.env import TorchVecEnv, space_shape
from rlnorm.errors import EnvError, NonFiniteError
from rlnorm.normalize import RewardScaler
from rlnorm.safety import acting


@dataclass
class Rollout:
    """``T`` steps from ``N`` sub-envs, time-major, on the env's device.

    Attributes:
        obs: ``(T + 1, N, *obs_shape)``; row ``t + 1`` follows action ``t`` (after an episode
            ends at ``t`` it is that episode's final observation).
        actions: ``(T, N, *action_shape)`` as sent to the env.
        rewards, terminated, truncated: ``(T, N)``.
        valid: ``(T, N)``; False where the step only reset its sub-env (next-step autoreset).
        extras: the agent's per-sample outputs from acting, each ``(T + 1, N, ...)``; row
            ``T`` comes from acting on the last observation, for bootstrapping.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    valid: torch.Tensor
    extras: dict[str, torch.Tensor]

    @property
    def num_steps(self) -> int:
        """Environment steps in this rollout, counted as steps x sub-envs."""
        return self.rewards.numel()


@dataclass
class EvalResult:
    """Returns and lengths of the evaluated episodes, in a fixed per-env order."""

    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        """Mean return over the episodes."""
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        """Population standard deviation of the returns."""
        return float(self.returns.std())


def _obs_shape(env: TorchVecEnv) -> torch.Size:
    """The shape of every observation batch ``env`` must return."""
    return torch.Size((env.num_envs, *space_shape(env.single_observation_space)))


def _check_obs(obs: torch.Tensor, env: TorchVecEnv, expected: torch.Size | None = None) -> None:
    """Raise unless ``obs`` has ``expected`` shape (``_obs_shape(env)``: pass it in a loop)."""
    expected = _obs_shape(env) if expected is None else expected
    if obs.shape != expected:
        raise EnvError(
            f"{env.env_id} returned observations of shape {tuple(obs.shape)}, expected "
            f"{tuple(expected)} (num_envs, *observation_space.shape)"
        )


def _check_finite(name: str, values: torch.Tensor, valid: torch.Tensor | None = None) -> None:
    """Raise naming the first step and env whose ``values`` are NaN or inf (one host sync)."""
    bad = ~torch.isfinite(values.reshape(*values.shape[:2], -1)).all(-1)
    if valid is not None:
        bad &= valid
    if bool(bad.any()):
        step, env_index = (int(i) for i in bad.nonzero()[0])
        raise NonFiniteError(
            f"non-finite {name} at rollout step {step}, env index {env_index}",
            step=step,
            env_index=env_index,
        )


def uniform_actions(
    space: gym.spaces.Space, n: int, device: torch.device, draws: Draws = GLOBAL
) -> torch.Tensor:
    """``n`` actions drawn uniformly from a Discrete or bounded Box ``space``, on ``device``,
    from torch's global generator (so a seeded run is reproducible), or from a population's
    member generators (``draws``)."""
    if isinstance(space, gym.spaces.Discrete):
        return draws.randint_rows(int(space.n), n, device) + int(space.start)
    if isinstance(space, gym.spaces.Box) and space.is_bounded():
        low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
        high = torch.as_tensor(space.high, dtype=torch.float32, device=device)
        return low + (high - low) * draws.rand_rows(n, space_shape(space), device)
    raise EnvError(f"cannot draw uniform actions from {space}: need Discrete or a bounded Box")


def _act_on(agent: Agent, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
    with acting(*agent.acting_modules()):
        return agent.act(obs, deterministic=deterministic)


#: ``agent.act`` on raw observations in eval mode: the one way a policy acts.
act = act_in_eval_mode


#: Steps between two host reads in :func:`evaluate`.
_CHUNK = 8


class _Episodes:
    """Return and length of each sub-env's running episode, kept on the env's device.

    Under next-step autoreset the step after an episode ends is no transition: it gets
    ``valid`` False and adds nothing to the new episode's length.
    """

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self.returns = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.lengths = torch.zeros(num_envs, dtype=torch.int64, device=device)
        self.prev_done = torch.zeros(num_envs, dtype=torch.bool, device=device)
        self._zero, self._zero_length = self.returns.new_zeros(()), self.lengths.new_zeros(())

    def step(
        self,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        out: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> None:
        """Count one env step into the rows ``out = (valid, done, returns, lengths)``, where
        ``returns``/``lengths`` are each episode's totals including this step. Written in
        place, seven ops: a rollout's bookkeeping costs as little as a hand loop's."""
        valid, done, returns, lengths = out
        torch.logical_not(self.prev_done, out=valid)
        torch.add(self.returns, reward, out=returns)
        torch.add(self.lengths, valid, out=lengths)
        torch.logical_or(terminated, truncated, out=done)
        torch.where(done, self._zero, returns, out=self.returns)
        torch.where(done, self._zero_length, lengths, out=self.lengths)
        self.prev_done.copy_(done)


class RolloutManager:
    """Runs an agent's policy against a batched env, always in eval and inference mode.

    Args:
        agent: the agent whose :meth:`~rlnorm.agent.Agent.act` chooses actions.
        env: the training env; its device is where rollouts are stored.
        eval_env: a separate env for :meth:`evaluate`, so evaluation never disturbs the
            episodes in flight in ``env``.
        reward_scaler: scales the stored training rewards (episode returns are counted
            from the env's own rewards).

    A NaN/inf observation or reward raises :class:`~rlnorm.errors.NonFiniteError` naming
    the rollout step and env index. When the agent has an ``obs_normalizer``,
    :meth:`collect` folds each raw training observation into its statistics before
    normalizing it; rollouts hold normalized observations, as the networks saw them.
    :meth:`evaluate` never updates them.
    """

    def __init__(
        self,
        agent: Agent,
        env: TorchVecEnv,
        eval_env: TorchVecEnv | None = None,
        reward_scaler: RewardScaler | None = None,
    ) -> None:
        self.agent = agent
        self.env = env
        self.eval_env = eval_env
        self.reward_scaler = reward_scaler
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self._obs: torch.Tensor | None = None
        # an agent that skipped Agent.__init__ draws like a single run
        self._draws: Draws = getattr(agent, "draws", GLOBAL)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset the training env and the per-episode counters."""
        obs, _ = self.env.reset(seed=seed)
        _check_obs(obs, self.env)
        self._obs = obs
        self._episodes = _Episodes(self.env.num_envs, self.env.device)
        return obs

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The episodes in flight (for resuming a run): the current observations, each
        sub-env's running return and length, the recent finished episodes, and the reward
        scaler's statistics."""
        if self._obs is None:
            raise RuntimeError("nothing to save before the first reset")
        state = {
            "obs": self._obs.clone(),
            "episode_return": self._episodes.returns.clone(),
            "episode_length": self._episodes.lengths.clone(),
            "prev_done": self._episodes.prev_done.clone(),
            "recent_returns": torch.tensor(list(self.episode_returns), dtype=torch.float64),
            "recent_lengths": torch.tensor(list(self.episode_lengths), dtype=torch.int64),
        }
        if self.reward_scaler is not None:
            for key, value in self.reward_scaler.state_dict().items():
                state[f"reward_scaler.{key}"] = value.clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` (after :meth:`reset`; without ``obs`` the freshly
        reset observations are kept and the per-episode counters start over)."""
        if "obs" in state:
            self._obs = state["obs"].to(self.env.device)
            self._episodes.returns.copy_(state["episode_return"])
            self._episodes.lengths.copy_(state["episode_length"])
            self._episodes.prev_done.copy_(state["prev_done"])
        self.episode_returns.clear()
        self.episode_returns.extend(state["recent_returns"].tolist())
        self.episode_lengths.clear()
        self.episode_lengths.extend(state["recent_lengths"].tolist())
        if self.reward_scaler is not None:
            prefix = "reward_scaler."
            self.reward_scaler.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )

    def collect(self, steps_per_env: int, random_actions: bool = False) -> Rollout:
        """Step every sub-env ``steps_per_env`` times with the current policy, or with
        actions drawn uniformly from the action space (``random_actions``: an off-policy
        agent's warm-up, which runs no network)."""
        obs = self._obs if self._obs is not None else self.reset()
        env, T, n = self.env, steps_per_env, self.env.num_envs
        obs_buf = torch.empty((T + 1, *obs.shape), dtype=obs.dtype, device=env.device)
        rewards = torch.empty((T, n), dtype=env.dtype, device=env.device)
        terminated = torch.empty((T, n), dtype=torch.bool, device=env.device)
        truncated = torch.empty_like(terminated)
        valid = torch.empty_like(terminated)
        finished = torch.empty((T, n), dtype=torch.bool, device=env.device)
        finished_return = torch.empty((T, n), dtype=torch.float64, device=env.device)
        finished_length = torch.empty((T, n), dtype=torch.int64, device=env.device)
        actions: torch.Tensor | None = None
        extras: dict[str, torch.Tensor] = {}

        normalizer = getattr(self.agent, "obs_normalizer", None)
        obs_shape = _obs_shape(env)
        # One acting context around the whole loop, not one per step: the env never runs the
        # agent's networks, so they stay in eval mode throughout, and the buffers above were
        # made outside inference mode so the learner can differentiate through what they hold.
        with acting(*self.agent.acting_modules()):
            for t in range(T):
                if normalizer is not None:
                    normalizer.update(obs)
                    obs = normalizer(obs)
                out = (
                    ActOutput(uniform_actions(env.single_action_space, n, env.device, self._draws))
                    if random_actions
                    else self.agent.act(obs)
                )
                if actions is None:
                    with torch.inference_mode(False):
                        actions = out.actions.new_empty((T, *out.actions.shape))
                        extras = {k: v.new_empty((T + 1, *v.shape)) for k, v in out.extras.items()}
                obs_buf[t] = obs
                actions[t] = out.actions
                for k, v in out.extras.items():
                    extras[k][t] = v
                obs, reward, term, trunc, _ = env.step(out.actions)
                _check_obs(obs, env, obs_shape)
                terminated[t], truncated[t] = term, trunc
                # Episode bookkeeping stays on device: finished episodes are read once per
                # rollout.
                self._episodes.step(
                    reward,
                    term,
                    trunc,
                    (valid[t], finished[t], finished_return[t], finished_length[t]),
                )
                if self.reward_scaler is not None:
                    reward = self.reward_scaler(reward, finished[t])
                rewards[t] = reward
            self._obs = obs
            if normalizer is not None:  # folded into the statistics at the next collect's start
                obs = normalizer(obs)
            obs_buf[T] = obs
            if extras:  # the extras' row T (PPO: the bootstrap value); skipped when none are kept
                for k, v in self.agent.act(obs).extras.items():
                    extras[k][T] = v

        # Raised after the episode bookkeeping: a caller may drop this rollout and go on.
        _check_finite("reward", rewards, valid)
        _check_finite("observation", obs_buf)
        self.episode_returns.extend(finished_return[finished].tolist())
        self.episode_lengths.extend(finished_length[finished].tolist())
        if actions is None:
            raise ValueError(f"collect needs steps_per_env >= 1, got {steps_per_env}")
        return Rollout(obs_buf, actions, rewards, terminated, truncated, valid, extras)

    def evaluate(
        self, episodes: int, deterministic: bool = True, seed: int | None = None
    ) -> EvalResult:
        """Run ``episodes`` full episodes on the eval env (see :func:`evaluate`)."""
        if self.eval_env is None:
            raise ValueError("this RolloutManager has no eval_env; pass one to evaluate")
        return evaluate(self.agent, self.eval_env, episodes, deterministic=deterministic, seed=seed)


def evaluate(
    agent: Agent,
    env: TorchVecEnv,
    episodes: int,
    deterministic: bool = True,
    seed: int | None = None,
    blocks: int = 1,
) -> EvalResult:
    """Run exactly ``episodes`` episodes of ``agent`` on ``env`` in eval mode.

    Sub-env ``i`` is assigned a fixed quota of episodes up front and only those are
    recorded, so the estimate is not biased towards short episodes (taking whichever
    episodes finish first would be). With ``blocks`` K, the sub-envs are K equal blocks
    (a population's members, :class:`rlnorm.stacking.MemberEnvs`) that each run
    ``episodes`` with the quotas one block alone would get; block ``k``'s episodes are
    entries ``k * episodes`` to ``(k + 1) * episodes - 1`` of the result.

    Built to cost no more than a hand loop over the same networks: one :func:`acting`
    context around the whole loop, and per step only three bookkeeping ops (each sub-env's
    running return, written to a row of a chunk, and its done flag); every ``_CHUNK`` steps
    the episodes that ended in the chunk are listed (one host sync) and recorded with a few
    ops on that short list.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n, device = env.num_envs, env.device
    per_block = n // blocks
    quota = torch.full((per_block,), episodes // per_block, dtype=torch.int64, device=device)
    quota[: episodes % per_block] += 1
    quota = quota.repeat(blocks)
    max_quota = int(quota.max())
    # Column max_quota of returns/lengths and entry n of last_end/ended take the writes
    # meant for no one (episodes past their quota, ends that are not a sub-env's last), so
    # that no index is written twice and every write is deterministic on any device.
    returns = torch.zeros((n, max_quota + 1), dtype=torch.float64, device=device)
    lengths = torch.zeros((n, max_quota + 1), dtype=torch.int64, device=device)
    ended = torch.zeros(n + 1, dtype=torch.int64, device=device)
    # The step of each sub-env's last episode end; -2 puts the first episode's start at 0.
    last_end = torch.full((n + 1,), -2, dtype=torch.int64, device=device)
    running = torch.zeros(n, dtype=torch.float64, device=device)
    zero = running.new_zeros(())
    chunk_returns = torch.empty((_CHUNK, n), dtype=torch.float64, device=device)
    chunk_done = torch.empty((_CHUNK, n), dtype=torch.bool, device=device)
    rows = list(zip(chunk_returns.unbind(), chunk_done.unbind(), strict=True))

    def record(first_step: int, count: int) -> int:
        """Record the episodes that ended in the chunk's first ``count`` rows; returns how
        many were recorded. Few sub-envs end an episode on a step, so this works on the
        list of ends (one ``nonzero``, the chunk's host sync), not on the whole chunk."""
        env_i, row = chunk_done[:count].T.nonzero(as_tuple=True)  # by sub-env, then step
        if len(env_i) == 0:
            return 0
        at = row + first_step
        first = torch.ones_like(env_i, dtype=torch.bool)  # a sub-env's first end in the chunk
        first[1:] = env_i[1:] != env_i[:-1]
        last = first.roll(-1)  # ... and its last
        # Under next-step autoreset an episode's first real step is two after the last end.
        ep_length = at - torch.where(first, last_end[env_i], at.roll(1)) - 1
        position = torch.arange(len(env_i), device=device)
        slot = ended[env_i] + position - torch.where(first, position, 0).cummax(0).values
        keep = slot < quota[env_i]
        slot_or_none = torch.where(keep, slot, max_quota)
        returns.index_put_((env_i, slot_or_none), chunk_returns[row, env_i])
        lengths.index_put_((env_i, slot_or_none), ep_length)
        env_or_none = torch.where(last, env_i, n)
        last_end.index_put_((env_or_none,), at)
        ended.index_put_((env_or_none,), slot + 1)
        return int(keep.sum())

    obs, _ = env.reset(seed=seed)
    obs_shape = _obs_shape(env)
    _check_obs(obs, env, obs_shape)
    max_steps = (env.max_episode_steps + 1) * max_quota + 1
    remaining = episodes * blocks
    with acting(*agent.acting_modules()):
        for step in range(max_steps):
            actions = agent.act(normalize_obs(agent, obs), deterministic).actions
            obs, reward, term, trunc, _ = env.step(actions)
            _check_obs(obs, env, obs_shape)
            ep_return, done = rows[step % _CHUNK]
            torch.add(running, reward, out=ep_return)  # the return up to and with this step
            torch.logical_or(term, trunc, out=done)
            torch.where(done, zero, ep_return, out=running)
            # Recording is a host sync: once per chunk, as later episodes are not recorded.
            if step % _CHUNK == _CHUNK - 1 or step == max_steps - 1:
                remaining -= record(step - step % _CHUNK, step % _CHUNK + 1)
                if remaining == 0:
                    break
    if remaining:
        raise EnvError(f"evaluation did not finish {episodes} episodes in {max_steps} steps")
    taken = torch.arange(max_quota + 1, device=device) < quota[:, None]
    return EvalResult(returns[taken].cpu().numpy(), lengths[taken].cpu().numpy())


def predict(agent: Agent, obs: Any, deterministic: bool = True) -> Any:
    """Actions for one unbatched observation or a batch, through the same eval-mode path.

    ``obs`` may be a tensor, an array or a list; a single observation of the space's shape
    gets a single action back, a batch ``(B, *shape)`` gets ``B`` actions. Tensors come back
    for tensor input, numpy arrays otherwise.
    """
    space: gym.spaces.Space = agent.observation_space
    as_tensor = isinstance(obs, torch.Tensor)
    x = torch.as_tensor(np.asarray(obs) if not as_tensor else obs, device=agent.device)
    shape = space_shape(space)
    if tuple(x.shape) == shape:
        batch = x.unsqueeze(0)
    elif x.dim() == len(shape) + 1 and tuple(x.shape[1:]) == shape:
        batch = x
    else:
        raise EnvError(
            f"observation of shape {tuple(x.shape)} does not fit the agent's observation space "
            f"{shape}: pass one observation {shape} or a batch (B, {', '.join(map(str, shape))})"
        )
    actions = act(agent, batch, deterministic).actions
    if batch is not x:
        actions = actions[0]
    return actions if as_tensor else actions.cpu().numpy()
