"""``perils-checkpoint``: the source post's second bug, checkpoints that carry train mode.

"Model checkpoints are saved while the model is training. Therefore, the model from the
meta checkpoint is always stuck in train mode." Reproduced with PPO on CartPole-v1 and DDPG
on Pendulum-v1, BatchNorm in every network: inside the last update of training (modules in
train mode, as a training loop's periodic save finds them) the agent is saved twice,

- the naive way (THE BUG BEING REPRODUCED, :class:`SaveMidTraining`): ``torch.save`` of
  the whole agent, reloaded with ``torch.load`` and called as is;
- rlnorm's way: :func:`rlnorm.save`, reloaded with :func:`rlnorm.load`;

and a copy of the agent is kept as *the policy that was saved* (acting as rlnorm acts, in
eval mode). Each reload then plays the evaluation episodes one state at a time and in
batches (the 10 sub-envs of the eval env); we report the return and the fraction of its
actions that differ from the saved policy's on the same states.
"""

from __future__ import annotations

import copy
import io
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

import rlnorm
from rlnorm import agents
from rlnorm.agent import Agent
from rlnorm.reproduce import report, runner
from rlnorm.reproduce.perils_acting import tf1_train_mode
from rlnorm.rollout import act as safe_act

TITLE = "perils-checkpoint: checkpoints saved in train mode (the post's second bug)"

#: (PPO steps, DDPG steps, DDPG random warm-up steps, evaluation episodes) per budget.
STEPS = {
    "tiny": (512, 160, 80, 4),
    "quick": (16_000, 3_000, 1_000, 20),
    "full": (40_000, 12_000, 4_000, 100),
}

#: The learner's diagnostics watch updates 0, N, 2N, ... with hooks that do not pickle: only
#: the first (the save is in the last).
NO_WATCH = "train.norm_diagnostics_every=1000000000"

PUBLISHED = [
    "The post (Irpan 2017, `shared/reference/perils-of-batch-norm.md`): a model restored from "
    "a MetaGraph checkpoint saved during training is stuck in train mode and normalizes its "
    "input with batch statistics (a lone state to 0); 'at least 6 hours' to find, and all "
    "experiments rerun. No return is given.",
]


class SaveMidTraining:
    """Mixin: inside the last update (``progress == 1``), while every module is in train
    mode, save the agent THE NAIVE WAY (``torch.save`` of the object: THE BUG BEING
    REPRODUCED) and with :func:`rlnorm.save`, and keep a copy as the saved policy."""

    naive_bytes: bytes | None = None
    rlnorm_dir: str | None = None
    saved_policy: Agent | None = None
    updates_seen = 0

    def update(self, batch: Any, progress: float) -> dict[str, float]:
        metrics = super().update(batch, progress)  # type: ignore[misc]
        self.updates_seen += 1
        # Not in the first update: the learner watches it with hooks, which do not pickle.
        if progress >= 1.0 and self.naive_bytes is None and self.updates_seen > 1:
            buffer = io.BytesIO()
            torch.save(self, buffer)  # the bug: a pickled train-mode module
            self.rlnorm_dir = tempfile.mkdtemp(prefix="rlnorm-perils-checkpoint-")
            rlnorm.save(self, Path(self.rlnorm_dir) / "ckpt", env_id="saved-mid-training")  # type: ignore[arg-type]
            self.saved_policy = copy.deepcopy(self)  # type: ignore[assignment]
            self.naive_bytes = buffer.getvalue()
        return metrics


class NaivelySavedPPO(SaveMidTraining, agents.get("ppo")):  # type: ignore[misc]
    """PPO saved mid-training both ways (module level, so that pickle finds it)."""


class NaivelySavedTD3(SaveMidTraining, agents.get("td3")):  # type: ignore[misc]
    """TD3 (DDPG's setting) saved mid-training both ways."""


def make_saving_agent(cls: type[Agent], env: Any, cfg: Any) -> Agent:
    """The trial's agent with :class:`SaveMidTraining`."""
    saving = {"ppo": NaivelySavedPPO, "td3": NaivelySavedTD3}[cls.name]
    return runner.build_agent(cast(type[Agent], saving), env, cfg)


Policy = Callable[[torch.Tensor], torch.Tensor]


def play(
    policy: Policy, reference: Policy, env: Any, episodes: int, seed: int
) -> tuple[np.ndarray, float]:
    """``episodes`` episodes of ``policy`` on ``env``: their returns, and the fraction of
    its actions that differ from ``reference``'s on the same states."""
    n = env.num_envs
    quota = torch.full((n,), episodes // n)
    quota[: episodes % n] += 1
    counts = torch.zeros(n, dtype=torch.int64)
    running = torch.zeros(n, dtype=torch.float64)
    prev_done = torch.zeros(n, dtype=torch.bool)
    returns: list[float] = []
    differ = total = 0
    obs, _ = env.reset(seed=seed)
    while bool((counts < quota).any()):
        with torch.no_grad():
            actions = policy(obs)
            expected = reference(obs)
        active = (counts < quota) & ~prev_done
        gap = (actions.to(torch.float64) - expected.to(torch.float64)).abs().reshape(n, -1)
        differ += int((gap.amax(1) > 1e-4)[active].sum())
        total += int(active.sum())
        obs, reward, term, trunc, _ = env.step(actions)
        running += reward.cpu().double()
        done = (term | trunc).cpu()
        for i in done.nonzero().flatten().tolist():
            if counts[i] < quota[i]:
                returns.append(float(running[i]))
                counts[i] += 1
        running[done] = 0.0
        prev_done = done
    return np.array(returns), differ / max(total, 1)


def one_at_a_time(policy: Policy) -> Policy:
    """``policy`` called on each state alone, as a batch of one."""
    return lambda obs: torch.cat([policy(o[None]) for o in obs])


def measure(agent: Agent, trial: runner.Trial, eval_env: Any) -> dict[str, Any]:
    """Reload both checkpoints and play each one state at a time and in batches."""
    assert isinstance(agent, SaveMidTraining) and agent.naive_bytes is not None
    episodes = trial.final_episodes
    naive = torch.load(io.BytesIO(agent.naive_bytes), weights_only=False)
    loaded = rlnorm.load(Path(str(agent.rlnorm_dir)) / "ckpt")
    shutil.rmtree(str(agent.rlnorm_dir), ignore_errors=True)
    saved = agent.saved_policy
    assert saved is not None
    row: dict[str, Any] = {
        "naive_reload_in_train_mode": any(m.training for m in naive.modules().values()),
        "rlnorm_load_in_train_mode": any(m.training for m in loaded.modules().values()),
        "audit_naive": runner.audit_text(naive),
        "audit_rlnorm": runner.audit_text(loaded),
    }

    def reference(obs: torch.Tensor) -> torch.Tensor:
        return safe_act(saved, obs, True).actions

    def naive_act(obs: torch.Tensor) -> torch.Tensor:
        return naive.act(obs, deterministic=True).actions  # called as is: train mode

    def naive_tf1(obs: torch.Tensor) -> torch.Tensor:
        with tf1_train_mode(*naive.acting_modules()):
            return naive_act(obs)

    def loaded_act(obs: torch.Tensor) -> torch.Tensor:
        return safe_act(loaded, obs, True).actions

    variants: dict[str, Policy] = {
        "naive torch.load, batch of 1": one_at_a_time(naive_act),
        "naive torch.load, batch of 1, TF1 train mode": one_at_a_time(naive_tf1),
        f"naive torch.load, batch of {eval_env.num_envs}": naive_act,
        "rlnorm.load, batch of 1": one_at_a_time(loaded_act),
        f"rlnorm.load, batch of {eval_env.num_envs}": loaded_act,
        "saved policy (reference)": reference,
    }
    for name, policy in variants.items():
        try:
            returns, differ = play(policy, reference, eval_env, episodes, trial.seed + 5)
            row[f"{name}|return"], row[f"{name}|differ"] = float(returns.mean()), differ
            row[f"{name}|error"] = ""
        except (RuntimeError, ValueError) as e:  # torch refuses a train-mode batch of one
            row[f"{name}|return"], row[f"{name}|differ"] = float("nan"), float("nan")
            row[f"{name}|error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return row


def trials(seeds: int, budget: str) -> list[runner.Trial]:
    """PPO CartPole-v1 and DDPG Pendulum-v1 with BatchNorm, saved in their last update."""
    ppo_steps, ddpg_steps, ddpg_starts, episodes = STEPS[budget]
    common: dict[str, Any] = {
        "eval_points": 2 if budget == "tiny" else 5,
        "eval_episodes": 2 if budget == "tiny" else 10,
        "final_episodes": episodes,
        "make_agent": make_saving_agent,
        "post": measure,
    }
    out = []
    for seed in range(seeds):
        out.append(
            runner.Trial(
                "trained",
                "ppo",
                "CartPole-v1",
                "batch",
                seed,
                ppo_steps,
                overrides=("train.eval_num_envs=10", NO_WATCH),
                **common,
            )
        )
        out.append(
            runner.Trial(
                "trained",
                "td3",
                "Pendulum-v1",
                "batch",
                seed,
                ddpg_steps,
                overrides=(
                    f"agent.learning_starts={ddpg_starts}",
                    "train.eval_num_envs=10",
                    NO_WATCH,
                ),
                config_file=runner.packaged_config("td3/ddpg-Pendulum-v1.yaml"),
                **common,
            )
        )
    return out


def loading_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per seed x way of loading and acting, from the trials' rows."""
    out = []
    for row in rows:
        names = [k.removesuffix("|return") for k in row if k.endswith("|return")]
        for name in names:
            out.append(
                {
                    "variant": name,
                    "env": row["env"],
                    "seed": row["seed"],
                    "steps": row["steps"],
                    "final_return": row[f"{name}|return"],
                    "differ_fraction": row[f"{name}|differ"],
                    "error": row[f"{name}|error"],
                    "in_train_mode": row["naive_reload_in_train_mode"]
                    if name.startswith("naive")
                    else row["rlnorm_load_in_train_mode"]
                    if name.startswith("rlnorm")
                    else False,
                    "audit": row["audit_naive"]
                    if name.startswith("naive")
                    else row["audit_rlnorm"]
                    if name.startswith("rlnorm")
                    else "",
                    "auc": row["auc"],
                    "commit": row.get("commit", ""),
                    "wall_s": row["wall_s"],
                }
            )
    return out


def run(
    seeds: int, budget: str, out: Path, workers: int, command: str, envs: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Run the reproduction and write its four files into ``out``; returns the table."""
    start = time.perf_counter()
    results = runner.run_trials(
        runner.select(trials(seeds, budget), envs),
        workers,
        desc="perils-checkpoint",
        store=out / "trials",
    )
    curves = [c for r in results for c in r.curve]
    rows = loading_rows([r.row for r in results])
    report.write_csv(out / "results.csv", rows)
    report.write_csv(out / "curves.csv", curves)
    reps = report.reps_for(budget)
    table = []
    for env_id in dict.fromkeys(r["env"] for r in rows):
        for variant in dict.fromkeys(r["variant"] for r in rows):
            group = [r for r in rows if r["env"] == env_id and r["variant"] == variant]
            finite = [r["final_return"] for r in group if np.isfinite(r["final_return"])]
            entry: dict[str, Any] = {"env": env_id, "variant": variant, "seeds": len(group)}
            if finite:
                iqm, low, high = report.iqm_ci(finite, reps)
                entry["return IQM [95% CI]"] = f"{iqm:.1f} [{low:.1f}, {high:.1f}]"
                entry["final_iqm"] = iqm
                entry["actions differing"] = float(np.median([r["differ_fraction"] for r in group]))
            entry["reloads in train mode"] = all(r["in_train_mode"] for r in group)
            entry["error"] = group[0]["error"] or "-"
            entry["audit (warnings)"] = group[0]["audit"].split("\n")[0][:140] or "-"
            table.append(entry)
    report.plot_bars(table, out / "figure.png", TITLE, value="final_iqm")
    columns = [
        "env",
        "variant",
        "seeds",
        "return IQM [95% CI]",
        "actions differing",
        "reloads in train mode",
        "error",
        "audit (warnings)",
    ]
    ppo, ddpg = STEPS[budget][0], STEPS[budget][1]
    description = [
        f"PPO on CartPole-v1 ({ppo} steps) and DDPG on Pendulum-v1 ({ddpg} steps), BatchNorm "
        "in every network, saved inside the last update. Return: mean over the evaluation "
        f"episodes ({STEPS[budget][3]} per seed, deterministic), IQM over seeds; *actions "
        "differing*: median over seeds of the fraction of actions that differ from the saved "
        "policy's on the same states (> 1e-4). *TF1 train mode* runs the naive reload as the "
        "post's TensorFlow did (batch statistics, no error for a batch of one); in torch a "
        "train-mode batch of one raises (torch's BatchNorm1d a ValueError; rlnorm's layers, "
        "which the pickle holds, a NormalizationError naming the fix): the error column. The "
        "figure shows the return IQM per way of loading; `curves.csv` holds the training curves.",
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
        ["## Reproduced?", "", *conclusions(table)],
        PUBLISHED,
        # results.csv has a row per way of loading, each with its trial's wall time
        training_s=sum(float(r.row["wall_s"]) for r in results),
    )


def conclusions(table: list[dict[str, Any]]) -> list[str]:
    """Measured sentences: does the naive reload act in train mode and differ, and does
    rlnorm.load act as the saved policy did?"""
    lines = []
    for t in table:
        if "final_iqm" not in t:
            lines.append(f"- {t['env']}, {t['variant']}: could not act ({t['error']}).")
            continue
        lines.append(
            f"- {t['env']}, {t['variant']}: return IQM {t['final_iqm']:.1f}, "
            f"{100 * t['actions differing']:.1f}% of actions differ from the saved policy's; "
            f"reloads in train mode: {'yes' if t['reloads in train mode'] else 'no'}."
        )
    return lines
