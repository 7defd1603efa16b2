"""What acting through rlnorm costs: evaluation against a hand loop and gymnasium's numpy env.

For each N (sub-envs) it times, in one run and one process, env steps per second of:

* ``evaluate``: ``rlnorm.rollout.evaluate(agent, env, episodes, deterministic=True)``, a PPO
  agent on rlnorm's torch CartPole-v1 (every safety context and check included);
* ``hand loop``: the same kind of env and the same agent's actor network, set to eval mode
  once, the whole loop under ``torch.inference_mode``: ``actor(obs).argmax(-1)``, ``step``,
  and the least bookkeeping an evaluation needs (running returns, finished-episode sum and
  count, on the device);
* ``gymnasium``: gymnasium's numpy ``CartPoleVectorEnv`` driven by a plain 64x64 tanh
  ``nn.Sequential`` with the actor's weights (``torch.from_numpy`` in, ``.numpy()`` out),
  under ``torch.inference_mode``.

All three run the same number of vector steps: the number ``evaluate`` takes for the seeded
episodes, counted once before timing. The actor is a 64x64 tanh MLP whose weights are set by
hand to a linear controller (push towards ``3 theta + theta_dot``), so that episodes last as
a trained policy's do instead of the ~10 steps of an untrained one. Contenders are timed in
interleaved rounds and each rate is the median over the rounds, so load from other processes
falls on all of them alike.

A second table times collection: ``RolloutManager.collect(steps)`` (the PPO agent's
stochastic act with log-probabilities and values, every stored tensor, episode bookkeeping,
finite checks) against a hand loop calling the same ``agent.act`` in eval and inference mode
and storing the same tensors (observations, actions, log-probabilities, values, rewards,
flags) with a running return.

    taskset -c 1 python benchmarks/acting_overhead.py --sizes 1 1000 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from torch import nn

import rlnorm
from rlnorm import envs
from rlnorm.agents.ppo import PPO, PPOConfig
from rlnorm.rollout import RolloutManager, evaluate

CONTROLLER = (0.0, 0.0, 3.0, 1.0)  # weights on (x, x_dot, theta, theta_dot)


def parse_args() -> argparse.Namespace:
    """Command-line options; the defaults reproduce results/acting_overhead.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--norm", default="none", help="the agent's norm (rlnorm.norm name)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--collect-steps", type=int, default=256, help="steps per collect")
    return parser.parse_args()


def controller_agent(norm: str, device: str) -> PPO:
    """A CartPole PPO agent whose actor computes ``sign(CONTROLLER . obs)`` with its full
    64x64 network (every weight but a chain of single units is zero; the cost is the same)."""
    env = envs.make("CartPole-v1", 1)
    agent = PPO(env.single_observation_space, env.single_action_space, PPOConfig(), norm, device)
    linears = [m for m in agent.actor.body.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer in linears:
            layer.weight.zero_()
            layer.bias.zero_()
        linears[0].weight[0] = 0.1 * torch.tensor(CONTROLLER)
        for layer in linears[1:-1]:
            layer.weight[0, 0] = 1.0
        linears[-1].weight[:, 0] = torch.tensor([-1.0, 1.0])
    return agent


def plain_mlp(agent: PPO) -> nn.Sequential:
    """A plain ``Linear-Tanh-Linear-Tanh-Linear`` with the actor's linear weights."""
    linears = [m for m in agent.actor.body.modules() if isinstance(m, nn.Linear)]
    layers: list[nn.Module] = []
    for layer in linears:
        copy = nn.Linear(layer.in_features, layer.out_features)
        copy.load_state_dict(layer.state_dict())
        layers += [copy, nn.Tanh()]
    return nn.Sequential(*layers[:-1]).eval()


def count_steps(agent: PPO, n: int, episodes: int, device: str) -> int:
    """The vector steps ``evaluate`` takes for these seeded episodes."""
    env = envs.make("CartPole-v1", n, device)
    calls = 0
    step = env.step

    def counted(actions: torch.Tensor):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return step(actions)

    env.step = counted  # type: ignore[method-assign]
    evaluate(agent, env, episodes, deterministic=True, seed=0)
    return calls


def contenders(agent: PPO, n: int, episodes: int, steps: int, device: str) -> dict[str, Callable]:
    """One timed call per contender, each running ``steps`` vector steps of ``n`` sub-envs."""
    eval_env = envs.make("CartPole-v1", n, device)
    hand_env = envs.make("CartPole-v1", n, device)
    gym_env = CartPoleVectorEnv(num_envs=n)
    actor, net = agent.actor, plain_mlp(agent)

    def run_evaluate() -> None:
        evaluate(agent, eval_env, episodes, deterministic=True, seed=0)

    def run_hand() -> None:
        actor.eval()
        with torch.inference_mode():
            obs, _ = hand_env.reset(seed=0)
            ret = torch.zeros(n, dtype=torch.float64, device=device)
            total = torch.zeros(n, dtype=torch.float64, device=device)
            count = torch.zeros(n, dtype=torch.int64, device=device)
            for _ in range(steps):
                obs, reward, term, trunc, _ = hand_env.step(actor(obs).argmax(-1))
                ret += reward
                done = term | trunc
                total += ret * done
                count += done
                ret.masked_fill_(done, 0.0)
            float(total.sum()), int(count.sum())
        actor.train()

    def run_gym() -> None:
        with torch.inference_mode():
            obs, _ = gym_env.reset(seed=0)
            ret = np.zeros(n)
            total, count = np.zeros(n), np.zeros(n, dtype=np.int64)
            for _ in range(steps):
                actions = net(torch.from_numpy(obs)).argmax(-1).numpy()
                obs, reward, term, trunc, _ = gym_env.step(actions)
                ret += reward
                done = term | trunc
                total += ret * done
                count += done
                ret[done] = 0.0

    return {"evaluate": run_evaluate, "hand loop": run_hand, "gymnasium": run_gym}


def collectors(agent: PPO, n: int, steps: int, device: str) -> dict[str, Callable]:
    """``RolloutManager.collect(steps)`` and a hand loop storing the same tensors."""
    manager = RolloutManager(agent, envs.make("CartPole-v1", n, device))
    manager.reset(seed=0)
    hand_env = envs.make("CartPole-v1", n, device)
    state = {"obs": hand_env.reset(seed=0)[0]}
    nets = list(agent.modules().values())

    def run_collect() -> None:
        manager.collect(steps)

    def run_hand() -> None:
        obs_buf = torch.empty((steps + 1, n, 4), device=device)
        actions = torch.empty((steps, n), dtype=torch.int64, device=device)
        extras = {k: torch.empty((steps + 1, n), device=device) for k in ("log_prob", "value")}
        rewards = torch.empty((steps, n), device=device)
        terminated = torch.empty((steps, n), dtype=torch.bool, device=device)
        truncated = torch.empty_like(terminated)
        ret = torch.zeros(n, dtype=torch.float64, device=device)
        obs = state["obs"]
        for net in nets:
            net.eval()
        with torch.inference_mode():
            for t in range(steps):
                out = agent.act(obs)
                obs_buf[t], actions[t] = obs, out.actions
                for k in extras:
                    extras[k][t] = out.extras[k]
                obs, reward, term, trunc, _ = hand_env.step(out.actions)
                rewards[t], terminated[t], truncated[t] = reward, term, trunc
                ret += reward
                ret.masked_fill_(term | trunc, 0.0)
            obs_buf[steps] = obs
            for k, v in agent.act(obs).extras.items():
                if k in extras:
                    extras[k][steps] = v
        for net in nets:
            net.train()
        state["obs"] = obs

    return {"collect": run_collect, "hand loop": run_hand}


def timed(runs: dict[str, Callable], rounds: int) -> dict[str, float]:
    """Median seconds per call of each contender, over interleaved rounds after a warm-up."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def rate(value: float) -> str:
    """Env steps per second, with 3 significant digits."""
    return f"{value / 1e6:.3g}M" if value >= 1e6 else f"{value / 1e3:.3g}k"


def main() -> None:
    """Time every contender at every N and print a markdown table."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"rlnorm from {os.path.dirname(rlnorm.__file__)}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); {platform.processor() or platform.machine()}; "
        f"affinity {sorted(os.sched_getaffinity(0))}; norm {args.norm}"
    )
    agent = controller_agent(args.norm, args.device)
    print(
        "| N | episodes | vector steps | evaluate | hand loop | gymnasium numpy + MLP "
        "| evaluate / hand | evaluate / gymnasium |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        episodes = max(4, n)
        steps = count_steps(agent, n, episodes, args.device)
        seconds = timed(contenders(agent, n, episodes, steps, args.device), args.rounds)
        r = {name: steps * n / t for name, t in seconds.items()}
        print(
            f"| {n} | {episodes} | {steps} | {rate(r['evaluate'])} | {rate(r['hand loop'])} | "
            f"{rate(r['gymnasium'])} | {r['evaluate'] / r['hand loop']:.2f}x | "
            f"{r['evaluate'] / r['gymnasium']:.2f}x |",
            flush=True,
        )
    print("\n| N | steps per collect | collect | hand loop | collect / hand |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        steps = args.collect_steps
        seconds = timed(collectors(agent, n, steps, args.device), args.rounds)
        r = {name: steps * n / t for name, t in seconds.items()}
        print(
            f"| {n} | {steps} | {rate(r['collect'])} | {rate(r['hand loop'])} | "
            f"{r['collect'] / r['hand loop']:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
