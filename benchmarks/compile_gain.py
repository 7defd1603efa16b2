"""What ``torch.compile`` buys a small SAC update on this CPU, against eager torch.

sbx trains SAC on Pendulum-v1 at about twice rlnorm's steps per CPU second on one core
(`results/offpolicy_peers.md`): it compiles its whole update with XLA, while rlnorm runs
it op by op. Before building compiled updates into rlnorm's agents, this measures the gain
on a plain-torch SAC update of rlnorm's shipped Pendulum-v1 shape (64x64 ReLU actor and
twin critics with targets, batch 256 from a 100k replay, tanh-Gaussian policy, learned
temperature, Adam with torch's fused kernel, Polyak targets): the same update run eager,
then with the critic and actor losses (forward and, through AOTAutograd, backward) under
``torch.compile`` (inductor, the default mode), then eager again. Each is timed over
``--updates`` updates after a warm-up, by CPU time; compilation is timed apart::

    taskset -c 1 python benchmarks/compile_gain.py [--updates 1000] [--conditions TEXT]
        [--output FILE]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from provenance import header
from torch import nn

RESULTS = Path(__file__).parent / "results" / "compile_gain.md"
OBS, ACT, BATCH, REPLAY = 3, 1, 256, 100_000


def mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, outputs)
    )


class SAC:
    """A plain SAC update: the arithmetic of rlnorm's, without its bookkeeping."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.actor = mlp(OBS, 2 * ACT)
        self.critics = [mlp(OBS + ACT, 1) for _ in range(2)]
        self.targets = [mlp(OBS + ACT, 1) for _ in range(2)]
        for target, critic in zip(self.targets, self.critics, strict=True):
            target.load_state_dict(critic.state_dict())
        self.log_alpha = torch.zeros((), requires_grad=True)
        self.critic_params: list[torch.Tensor] = [p for c in self.critics for p in c.parameters()]
        self.target_params: list[torch.Tensor] = [p for t in self.targets for p in t.parameters()]
        self.optimizers = [
            torch.optim.Adam(params, lr=1e-3, fused=True)
            for params in (self.critic_params, list(self.actor.parameters()), [self.log_alpha])
        ]
        # observations, actions, rewards, next observations, terminations
        self.replay = [
            torch.randn(REPLAY, OBS),
            torch.rand(REPLAY, ACT) * 2 - 1,
            torch.randn(REPLAY),
            torch.randn(REPLAY, OBS),
            torch.zeros(REPLAY),
        ]
        self.critic_loss: Callable[..., torch.Tensor] = self._critic_loss
        self.actor_loss: Callable[..., tuple[torch.Tensor, torch.Tensor]] = self._actor_loss

    def policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.actor(obs).chunk(2, -1)
        log_std = log_std.clamp(-5, 2)
        noise = torch.randn_like(mean)
        pre_tanh = mean + log_std.exp() * noise
        gaussian = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        squash = (2 * (math.log(2) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), gaussian - squash

    def q(self, nets: list[nn.Sequential], obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1)
        return torch.min(nets[0](x), nets[1](x)).squeeze(-1)

    def _critic_loss(self, *batch: torch.Tensor) -> torch.Tensor:
        obs, act, reward, next_obs, done = batch
        with torch.no_grad():
            next_act, next_log_prob = self.policy(next_obs)
            next_q = self.q(self.targets, next_obs, next_act)
            soft = next_q - self.log_alpha.exp() * next_log_prob
            target = reward + 0.99 * (1 - done) * soft
        x = torch.cat([obs, act], -1)
        first, second = (((c(x).squeeze(-1) - target) ** 2).mean() for c in self.critics)
        return first + second

    def _actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act, log_prob = self.policy(obs)
        loss = (self.log_alpha.exp().detach() * log_prob - self.q(self.critics, obs, act)).mean()
        return loss, log_prob.detach()

    def update(self) -> None:
        index = torch.randint(0, REPLAY, (BATCH,))
        obs, act, reward, next_obs, done = (t[index] for t in self.replay)
        critic_opt, actor_opt, alpha_opt = self.optimizers
        critic_opt.zero_grad()
        self.critic_loss(obs, act, reward, next_obs, done).backward()
        critic_opt.step()
        actor_opt.zero_grad()
        loss, log_prob = self.actor_loss(obs)
        loss.backward()
        actor_opt.step()
        alpha_opt.zero_grad()
        (-(self.log_alpha * (log_prob - ACT)).mean()).backward()
        alpha_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self.target_params, self.critic_params, 0.005)


def cpu_ms_per_update(sac: SAC, updates: int) -> float:
    for _ in range(50):
        sac.update()
    start = time.process_time()
    for _ in range(updates):
        sac.update()
    return 1e3 * (time.process_time() - start) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sac = SAC()
    rows: list[tuple[str, float, float | None]] = [
        ("eager", cpu_ms_per_update(sac, args.updates), None)
    ]
    start = time.perf_counter()
    sac.critic_loss = torch.compile(sac._critic_loss)
    sac.actor_loss = torch.compile(sac._actor_loss)
    sac.update()  # compiles both, forward and backward
    sac.update()
    compile_s = time.perf_counter() - start
    rows.append(("losses compiled (inductor)", cpu_ms_per_update(sac, args.updates), compile_s))
    sac.critic_loss, sac.actor_loss = sac._critic_loss, sac._actor_loss
    rows.append(("eager, again", cpu_ms_per_update(sac, args.updates), None))
    eager = (rows[0][1] + rows[2][1]) / 2
    software = f"torch {torch.__version__}, one torch thread"
    lines = [
        *header("torch.compile on a small SAC update (CPU)", software, args.conditions),
        f"- {args.updates} updates timed per row (CPU time) after 50 untimed; the update and "
        "what is compiled: the script's docstring. The ratio is against the mean of the two "
        "eager rows.",
        "",
        "| update | CPU ms / update | x eager | compile s |",
        "|---|---|---|---|",
        *(
            f"| {name} | {ms:.2f} | {ms / eager:.2f} | "
            f"{'—' if seconds is None else f'{seconds:.1f}'} |"
            for name, ms, seconds in rows
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
