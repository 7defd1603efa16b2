"""``perils-shared-stats``: the source post's third bug, statistics shared across streams.

"I create two copies of the network with shared weights. One copy gets MNIST data, and the
other copy gets SVHN data. [...] The moving averages for dataset mean and variance were
also shared [...] the moving average converged to the average of MNIST and SVHN data."
Reproduced twice:

- in RL: SAC's critic with BatchNorm reads ``(s, a)`` and ``(s', a')``, on Pendulum-v1 and
  InvertedPendulum-v5 (MuJoCo, gymnasium backend). THE BUG BEING REPRODUCED
  (:func:`make_shared_statistics_sac`): two train-mode passes, one per stream, through one
  set of statistics (rlnorm's per-stream critic whose two streams are made one layer).
  The fixes: ``joint`` (one pass over the merged batch, rlnorm's default) and
  ``per_stream`` (each stream its own statistics); ``none`` is SAC without BatchNorm.
- the supervised miniature of the post's transfer bug: a classifier trained on two
  domains whose inputs have different statistics (one standard normal, one shifted and
  scaled), by one merged batch, by two passes sharing statistics (THE BUG), or by two
  passes with per-stream statistics; accuracy in eval mode.

The figure shows, per variant, the median seed and the band from the worst to the best,
as the post's figure shows top, median and worst of 5 seeds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlnorm.agent import Agent
from rlnorm.diagnostics import StreamWatch
from rlnorm.nets import StreamNorm, joint_forward, mlp
from rlnorm.optim import Adam
from rlnorm.reproduce import report, runner
from rlnorm.rollout import act as safe_act
from rlnorm.safety import acting, training
from rlnorm.targets import TargetNetwork

TITLE = "perils-shared-stats: statistics shared across streams (the post's third bug)"

SHARED = "separate passes, shared statistics (BUG)"
JOINT = "joint pass (rlnorm default)"
PER_STREAM = "per-stream statistics"
NONE = "no BatchNorm"
MINIATURE = "two-domain classification"
SA_GAP, NEXT_GAP = "critic gap (s,a)", "critic gap (s',a')"

#: (RL steps per env, supervised gradient steps) per budget.
STEPS = {"tiny": (150, 60), "quick": (1_500, 400), "full": (6_000, 1_000)}

PUBLISHED = [
    "The post (Irpan 2017, `shared/reference/perils-of-batch-norm.md`): the same model fed "
    "two datasets as one merged batch versus two shared-weight copies with shared moving "
    "averages; the second was 'consistently' about 2% less accurate, with a larger variance "
    "over 5 seeds (top, median and worst seed shown); separate statistics per copy gave the "
    "best results.",
    "CrossQ (Bhatt et al., ICLR 2024, Sec. 3): separate train-mode BatchNorm passes over "
    "(s, a) and (s', a') leave the critic with statistics of a mixture; a joint forward pass "
    "fixes it.",
]


# -- the bug being reproduced --------------------------------------------------------------
def make_shared_statistics_sac(cls: type[Agent], env: Any, cfg: Any) -> Agent:
    """THE BUG: SAC whose critic reads ``(s, a)`` and ``(s', a')`` in two train-mode passes
    through ONE set of BatchNorm statistics: the per-stream critic (``critic_streams =
    per_stream``) with each layer's two streams made the same layer, so both passes move
    the same running statistics (and use the same affine weights)."""
    cfg.agent_config.critic_streams = "per_stream"
    agent: Any = runner.build_agent(cls, env, cfg)  # SAC: its critic, target, replay
    for module in agent.critic.modules():
        if isinstance(module, StreamNorm):
            module[1] = module[0]  # the bug: stream 1 shares stream 0's statistics
    agent.critic_target = TargetNetwork(agent.critic)
    return agent


# -- measurements --------------------------------------------------------------------------
def critic_gaps(agent: Any, trial: runner.Trial, eval_env: Any) -> dict[str, Any]:
    """How far the critic's train-mode function (as its update runs it) is from its eval-mode
    one (what the actor loss and the target read), on a replay sample of ``(s, a)`` and on
    ``(s', a')`` with ``a'`` from the policy: mean ``|Q_train - Q_eval|`` over the std of
    ``Q_eval``. ``agent`` is a SAC agent (replay, action scale, critic)."""
    batch = agent.replay.sample(256)
    obs, next_obs = batch.obs.flatten(1).float(), batch.next_obs.flatten(1).float()
    actions = agent.scale.from_env(batch.actions)
    next_actions = agent.scale.from_env(safe_act(agent, batch.next_obs).actions)
    x, x2 = torch.cat([obs, actions], -1), torch.cat([next_obs, next_actions], -1)
    critic = agent.critic
    saved = [(b, b.clone()) for b in critic.buffers()]
    stream = 1 if agent.critic_streams == "per_stream" else 0
    with torch.no_grad():
        with training(critic), torch.no_grad():
            if agent.critic_streams == "joint":
                train_sa, train_next = joint_forward(critic, x, x2)
            else:
                train_sa, train_next = critic(x, stream=0), critic(x2, stream=stream)
        for b, value in saved:
            b.copy_(value)
        with acting(critic):
            eval_sa, eval_next = critic(x, stream=0), critic(x2, stream=stream)
    return {
        "critic_gap_sa": float((train_sa - eval_sa).abs().mean() / eval_sa.std()),
        "critic_gap_next": float((train_next - eval_next).abs().mean() / eval_next.std()),
        "audit_end": runner.audit_after_update(agent),
    }


# -- the supervised miniature --------------------------------------------------------------
def miniature(variant: str, seed: int, steps: int, dim: int = 16) -> runner.TrialResult:
    """Train a BatchNorm classifier on two input domains as ``variant`` says; the result's
    ``final_return`` is the eval-mode test accuracy over both domains."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(dim, 4, generator=gen)
    shift, scale = 3 * torch.randn(dim, generator=gen), torch.exp(torch.randn(dim, generator=gen))

    def sample(domain: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, dim, generator=gen)  # the label is read from the standard input
        return (z if domain == 0 else shift + scale * z), (z @ teacher).argmax(-1)

    torch.manual_seed(seed)
    net = mlp(dim, 4, (64, 64), "batch", "relu", streams=2 if variant == PER_STREAM else 1)
    net.eval()  # at rest in eval mode, as rlnorm keeps modules; training() switches
    optimizer = Adam(net.parameters(), lr=1e-3)
    tests = [sample(d, 2000) for d in (0, 1)]

    def accuracy() -> float:
        with acting(net):
            right = [
                (net(x, stream=d if variant == PER_STREAM else 0).argmax(-1) == y).float().mean()
                for d, (x, y) in enumerate(tests)
            ]
        return float(torch.stack(right).mean())

    def train_step() -> None:
        (xa, ya), (xb, yb) = sample(0, 64), sample(1, 64)
        with training(net):
            if variant == JOINT:
                logits_a, logits_b = joint_forward(net, xa, xb)
            else:  # two passes: shared statistics (the bug) or per stream
                logits_a = net(xa, stream=0)
                logits_b = net(xb, stream=1 if variant == PER_STREAM else 0)
            loss = F.cross_entropy(logits_a, ya) + F.cross_entropy(logits_b, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    curve = []
    for step in range(1, steps + 1):
        train_step()
        if step % max(1, steps // 10) == 0:
            point = {"variant": variant, "env": MINIATURE, "seed": seed, "step": step}
            curve.append(point | {"return": accuracy()})
    final = accuracy()
    with StreamWatch({"net": net}) as watch:  # one more step, watched for the audit
        train_step()
    steps_arr = np.array([c["step"] for c in curve], dtype=float)
    accs = np.array([c["return"] for c in curve])
    row = {
        "variant": variant,
        "env": MINIATURE,
        "agent": "classifier",
        "norm": "batch",
        "seed": seed,
        "steps": steps,
        "final_return": final,
        "auc": runner.area_under_curve(steps_arr, accs),
        "wall_s": round(time.perf_counter() - start, 2),
        "audit_end": runner.audit_text({"net": net}, watch),  # type: ignore[arg-type]
    }
    return runner.TrialResult(row, curve)


# -- the reproduction ----------------------------------------------------------------------
def trials(seeds: int, budget: str) -> list[runner.Trial]:
    """SAC with BatchNorm critics, each way of reading the two streams, on both envs."""
    steps = STEPS[budget][0]
    small = budget == "tiny"
    variants = (
        (SHARED, "batch", (), make_shared_statistics_sac),
        (JOINT, "batch", ("agent.critic_streams=joint",), None),
        (PER_STREAM, "batch", ("agent.critic_streams=per_stream",), None),
        (NONE, "none", (), None),
    )
    return [
        runner.Trial(
            variant,
            "sac",
            env_id,
            norm,
            seed,
            steps,
            overrides=(*overrides, "agent.learning_starts=100"),
            config_file=runner.packaged_config("sac/Pendulum-v1.yaml"),
            backend=backend,
            eval_points=2 if small else 10,
            eval_episodes=2 if small else 10,
            final_episodes=2 if small else 20,
            make_agent=factory,
            post=critic_gaps,
        )
        for env_id, backend in (("Pendulum-v1", "auto"), ("InvertedPendulum-v5", "gymnasium"))
        for variant, norm, overrides, factory in variants
        for seed in range(seeds)
    ]


def run(
    seeds: int, budget: str, out: Path, workers: int, command: str, envs: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Run the reproduction and write its four files into ``out``; returns the table."""
    start = time.perf_counter()
    results = runner.run_trials(
        runner.select(trials(seeds, budget), envs),
        workers,
        desc="perils-shared-stats",
        store=out / "trials",
    )
    results += [
        miniature(variant, seed, STEPS[budget][1])
        for variant in (SHARED, JOINT, PER_STREAM)
        for seed in range(seeds)
    ]
    rows, _ = report.write_outputs(out, TITLE, results)
    keys = ("env", "variant")
    table = report.results_table(rows, keys, report.reps_for(budget))
    for entry in table:
        group = [r for r in rows if all(r[k] == entry[k] for k in keys)]
        for column, key in ((SA_GAP, "critic_gap_sa"), (NEXT_GAP, "critic_gap_next")):
            if key in group[0]:
                entry[column] = float(np.median([r[key] for r in group]))
    columns = [
        "env",
        "variant",
        "seeds",
        "final IQM [95% CI]",
        "median",
        "worst",
        "best",
        "AUC IQM [95% CI]",
        SA_GAP,
        NEXT_GAP,
        "wall s/run",
    ]
    description = [
        f"SAC (`configs/sac/Pendulum-v1.yaml`: 64x64, lr 1e-3, one gradient step per env step) "
        f"for {STEPS[budget][0]} env steps on each env; BatchNorm in actor and critics except "
        "in the `no BatchNorm` row. *Critic gap*: median over seeds of mean |Q_train - Q_eval| / "
        "std(Q_eval) at the end of training, where Q_train is the critic as its update runs it "
        "(train mode, the variant's passes) and Q_eval as the actor loss and the target read it "
        "(running statistics). The two-domain classification: a 64x64 BatchNorm MLP, 4 classes, "
        f"{STEPS[budget][1]} Adam steps of 64 + 64 samples; its 'return' is the eval-mode test "
        "accuracy over both domains (2000 samples each).",
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
    """Measured sentences: is the shared-statistics variant below the fixes, and does it
    leave a larger train/eval gap?"""
    lines = ["## Reproduced?", ""]
    for env_id in dict.fromkeys(t["env"] for t in table):
        by = {t["variant"]: t for t in table if t["env"] == env_id}
        bug = by[SHARED]
        for fix in (JOINT, PER_STREAM):
            text = (
                f"- {env_id}: shared statistics {bug['final_iqm']:.3g} vs {fix} "
                f"{by[fix]['final_iqm']:.3g} (final IQM)"
            )
            if SA_GAP in bug:
                text += (
                    f"; critic train/eval gap {bug[SA_GAP]:.3g} vs {by[fix][SA_GAP]:.3g} on "
                    f"(s,a), {bug[NEXT_GAP]:.3g} vs {by[fix][NEXT_GAP]:.3g} on (s',a')"
                )
            lower = bug["final_iqm"] < by[fix]["final_iqm"]
            lines.append(text + f": the bug scores {'lower' if lower else 'NOT lower'}.")
    return lines
