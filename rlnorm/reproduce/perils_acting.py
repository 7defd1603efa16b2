"""``perils-acting``: the source post's first bug, a BatchNorm policy acting in train mode.

"I fed the current state in a batch of size 1. I ran the policy in train mode. So I was
normalizing my input to 0 all the time." Reproduced during training, same seeds for every
variant, with PPO on CartPole-v1 and DDPG (the td3 agent with the DDPG paper's BatchNorm
placement) on Pendulum-v1:

- ``eval mode (rlnorm)``: the policy acts through :func:`rlnorm.acting`, as always;
- ``train mode, batch of 1 (BUG)``: every sub-env's state goes through the policy alone, in
  train mode;
- ``train mode, batch of 8 (BUG)``: the 8 sub-envs' states as one train-mode batch, so each
  action depends on the other sub-envs' states.

The bug (:class:`TrainModeActing`) is written here only. Train mode is TensorFlow 1's, as
in the post: batch statistics, moving averages not updated by acting (they were updated by
the train op only), and no error for a batch of one: torch's BatchNorm refuses a batch of
one in train mode, and rlnorm's guard says why; the post's code ran on, normalizing to 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlnorm import agents
from rlnorm import norm as norms
from rlnorm.agent import ActOutput, Agent
from rlnorm.reproduce import report, runner
from rlnorm.rollout import act as safe_act
from rlnorm.rollout import evaluate, uniform_actions

TITLE = "perils-acting: a BatchNorm policy acting in train mode (the post's first bug)"

SAFE = "eval mode (rlnorm)"
BATCH1 = "train mode, batch of 1 (BUG)"
BATCH8 = "train mode, batch of 8 (BUG)"

#: (PPO steps, DDPG steps, DDPG's random warm-up steps) per budget.
STEPS = {"tiny": (256, 160, 80), "quick": (16_000, 3_000, 1_000), "full": (50_000, 12_000, 4_000)}

PUBLISHED = [
    "The post (Irpan 2017, *On the Perils of Batch Norm*, `shared/reference/perils-of-batch-"
    "norm.md`): acting in train mode on a batch of one normalizes the input to 0; no number "
    "is given, only that the results came once it was fixed.",
    "RL Zoo benchmark (rl-baselines3-zoo `benchmark.md`): PPO CartPole-v1 500 at 100k steps; "
    "DDPG Pendulum-v1 -152 at 20k steps (no BatchNorm).",
    "CleanRL (`ppo.py`, CartPole-v1): 490 +- 6 at 500k steps.",
]


# -- the bug being reproduced --------------------------------------------------------------
def _batch_statistics(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TensorFlow 1's train-mode BatchNorm: the batch's own mean and (biased) variance, the
    moving averages left alone. A batch of one is normalized to exactly 0 (then the bias)."""
    eps: float = getattr(layer, "eps", 1e-5)
    y = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + eps)
    weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
    return y if weight is None else y * weight + bias


@contextmanager
def tf1_train_mode(*modules: nn.Module) -> Iterator[None]:
    """THE BUG'S TRAIN MODE: every batch-dependent norm layer of ``modules`` normalizes with
    the statistics of the batch it is given, whatever its size, as TF 1 did."""
    layers = [
        m
        for root in modules
        for m in root.modules()
        if (kind := norms.kind_of(m)) is not None and kind.batch_dependent
    ]
    for layer in layers:
        layer.forward = partial(_batch_statistics, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def train_mode_act(
    act: Any, modules: list[nn.Module], obs: torch.Tensor, batch: int, deterministic: bool
) -> ActOutput:
    """THE BUG: the policy ``act`` on ``obs`` with its ``modules`` in train mode, ``batch``
    states at a time."""
    for module in modules:
        module.train()  # the bug: acting in train mode (and leaving the policy in it)
    with tf1_train_mode(*modules):
        outs = [act(chunk, deterministic) for chunk in obs.split(batch)]
    return ActOutput(
        torch.cat([o.actions for o in outs]),
        {k: torch.cat([o.extras[k] for o in outs]) for k in outs[0].extras},
    )


class TrainModeActing:
    """Mixin, THE BUG BEING REPRODUCED: the policy acts in train mode on batches of
    ``act_batch`` states. It tells the rollout manager that no module acts, so
    :func:`rlnorm.acting` puts nothing in eval mode."""

    act_batch = 1

    def acting_modules(self) -> list[nn.Module]:
        return []

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        modules = super().acting_modules()  # type: ignore[misc]
        return train_mode_act(super().act, modules, obs, self.act_batch, deterministic)  # type: ignore[misc]


def make_train_mode_agent(batch: int, cls: type[Agent], env: Any, cfg: Any) -> Agent:
    """An agent of ``cls`` with :class:`TrainModeActing` (the bug) on batches of ``batch``."""
    bug = type(f"TrainModeActing{cls.__name__}", (TrainModeActing, cls), {"act_batch": batch})
    return runner.build_agent(bug, env, cfg)


# -- measurements --------------------------------------------------------------------------
def plain_copy(agent: Agent, agent_name: str) -> Agent:
    """The registered agent with ``agent``'s weights and statistics: the same network,
    acting as rlnorm acts (eval mode)."""
    cls = agents.get(agent_name)
    plain = cls(agent.observation_space, agent.action_space, agent.config, agent.norm)
    for name, module in plain.modules().items():
        module.load_state_dict(agent.modules()[name].state_dict())
        module.eval()
    return plain


def action_spread(actions: torch.Tensor) -> float:
    """How different the actions for different states are: the largest range of any action
    dimension (for discrete actions, the number of distinct actions minus one)."""
    if not actions.is_floating_point():
        return float(actions.unique().numel() - 1)
    flat = actions.reshape(actions.shape[0], -1)
    return float((flat.max(0).values - flat.min(0).values).max())


def measure(agent: Agent, trial: runner.Trial, eval_env: Any) -> dict[str, Any]:
    """The trained weights acting safely (eval mode) over the final evaluation's episodes,
    and the spread of the deterministic actions over 64 distinct states in train mode on
    batches of one versus eval mode."""
    plain = plain_copy(agent, trial.agent)
    safe = evaluate(plain, eval_env, trial.final_episodes, seed=trial.seed + 7)
    states = probe_states(eval_env, trial.seed)
    batch1 = _train_mode_probe(plain, states)
    return {
        "final_return_eval_mode": safe.mean,
        "spread_train_batch1": action_spread(batch1),
        "spread_eval": action_spread(safe_act(plain, states, True).actions),
    }


def _train_mode_probe(plain: Agent, states: torch.Tensor) -> torch.Tensor:
    """``plain``'s deterministic actions on ``states`` one at a time in TF 1 train mode."""
    modules = plain.acting_modules()
    with torch.no_grad():
        actions = train_mode_act(plain.act, modules, states, 1, True).actions
    for module in modules:
        module.eval()
    return actions


def probe_states(env: Any, seed: int, n: int = 64) -> torch.Tensor:
    """``n`` distinct states: the eval env's sub-envs after resets and a few random steps."""
    torch.manual_seed(seed)
    obs, _ = env.reset(seed=seed + 99)
    states = [obs]
    while sum(s.shape[0] for s in states) < n:
        obs, *_ = env.step(uniform_actions(env.single_action_space, env.num_envs, env.device))
        states.append(obs)
    return torch.cat(states)[:n].to(torch.float32)


# -- the reproduction ----------------------------------------------------------------------
def trials(seeds: int, budget: str) -> list[runner.Trial]:
    """Every variant on PPO CartPole-v1 and DDPG Pendulum-v1, same seeds."""
    ppo_steps, ddpg_steps, ddpg_starts = STEPS[budget]
    small = budget == "tiny"
    episodes: dict[str, Any] = {
        "eval_episodes": 2 if small else 10,
        "final_episodes": 4 if small else 40,
    }
    points = 2 if small else 10
    variants = (
        (SAFE, None),
        (BATCH1, partial(make_train_mode_agent, 1)),
        (BATCH8, partial(make_train_mode_agent, 8)),
    )
    out = [
        runner.Trial(
            variant,
            "ppo",
            "CartPole-v1",
            "batch",
            seed,
            ppo_steps,
            overrides=("train.num_envs=8", "train.eval_num_envs=8"),
            eval_points=points,
            make_agent=factory,
            post=measure,
            **episodes,
        )
        for variant, factory in variants
        for seed in range(seeds)
    ]
    out += [
        runner.Trial(
            variant,
            "td3",
            "Pendulum-v1",
            "batch",
            seed,
            ddpg_steps,
            overrides=(
                "train.num_envs=8",
                "train.eval_num_envs=8",
                f"agent.learning_starts={ddpg_starts}",
            ),
            config_file=runner.packaged_config("td3/ddpg-Pendulum-v1.yaml"),
            eval_points=points,
            make_agent=factory,
            post=measure,
            **episodes,
        )
        for variant, factory in variants
        for seed in range(seeds)
    ]
    return out


def run(
    seeds: int, budget: str, out: Path, workers: int, command: str, envs: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Run the reproduction and write its four files into ``out``; returns the table."""
    start = time.perf_counter()
    results = runner.run_trials(
        runner.select(trials(seeds, budget), envs),
        workers,
        desc="perils-acting",
        store=out / "trials",
    )
    rows, _ = report.write_outputs(out, TITLE, results)
    keys = ("env", "variant")
    table = report.results_table(rows, keys, report.reps_for(budget))
    for entry in table:
        group = [r for r in rows if all(r[k] == entry[k] for k in keys)]
        entry["same weights, eval mode"] = float(
            np.median([r["final_return_eval_mode"] for r in group])
        )
        entry["spread, train batch of 1"] = float(
            np.median([r["spread_train_batch1"] for r in group])
        )
        entry["spread, eval"] = float(np.median([r["spread_eval"] for r in group]))
    columns = [
        "env",
        "variant",
        "seeds",
        "final IQM [95% CI]",
        "median",
        "worst",
        "best",
        "AUC IQM [95% CI]",
        "same weights, eval mode",
        "spread, train batch of 1",
        "spread, eval",
        "wall s/run",
    ]
    description = [
        "PPO on CartPole-v1 (`configs/ppo/CartPole-v1.yaml`, 8 sub-envs) and DDPG on "
        "Pendulum-v1 (`configs/td3/ddpg-Pendulum-v1.yaml`: one critic, no smoothing, no delay, "
        "BatchNorm placed as in the DDPG paper; 8 sub-envs, one gradient step per env step), "
        "BatchNorm in every network. The bug variants act in train mode during training and in "
        "every evaluation; *same weights, eval mode* evaluates the bug variants' trained "
        "weights through rlnorm's eval-mode acting instead (median over seeds). *Spread*: over "
        "64 distinct states, the largest range of a deterministic action dimension (discrete: "
        "distinct actions - 1) in train mode on batches of one, and in eval mode: 0 means the "
        "policy gives every state the same action.",
    ]
    return report.finish(
        out,
        TITLE,
        command,
        budget,
        start,
        description,
        table,
        columns,
        conclusions(table),
        PUBLISHED,
        audit=report.audit_section(rows, keys),
    )


def conclusions(table: list[dict[str, Any]]) -> list[str]:
    """One measured sentence per env: is the train-mode variant far below the safe one?"""
    lines = ["## Reproduced?", ""]
    for env_id in dict.fromkeys(t["env"] for t in table):
        by = {t["variant"]: t for t in table if t["env"] == env_id}
        safe = by[SAFE]["final_iqm"]
        for bug in (BATCH1, BATCH8):
            gap = safe - by[bug]["final_iqm"]
            same = "yes" if by[bug]["spread, train batch of 1"] == 0 else "no"
            lines.append(
                f"- {env_id}, {bug}: final IQM {by[bug]['final_iqm']:.1f} vs {safe:.1f} in eval "
                f"mode ({gap:+.1f} for eval mode); every state got the same action in train "
                f"mode on a batch of one: {same}."
            )
    return lines
