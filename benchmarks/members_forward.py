"""Member-batched training steps: K networks stacked by ``rlnorm.members.stack`` against K
separate networks in a Python loop and against one network alone.

One training step is what an agent's update does per minibatch: a train-mode forward pass
of a batch of ``--batch`` samples per member, a loss, the backward pass and an Adam step
(``foreach=True``, as the agents build it). For each network and norm it times, in one
run and one process:

* ``stacked``: ``members.stack`` of K networks built under seeds 0..K-1, input
  ``[K, batch, in]``, loss through ``members.member_mean``, one Adam over the stacked
  parameters (``members.clip_grad_norm_`` too with ``--clip``);
* ``loop``: the same K networks as K modules with K Adams, stepped one after another;
* ``one``: a single network and its Adam, batch ``--batch``: what one seed costs today.

Networks: ``mlp64``, ``rlnorm.nets.mlp(4, 2, (64, 64), norm)`` (PPO's CartPole actor);
``critic256``, ``agents.offpolicy.mlp_critics(2, 4, (256, 256), norm, "relu", "joint")``
(SAC's Pendulum critics: two 256x256 Q-networks, read together). The contenders of one
row are timed in interleaved rounds (each round times each for ``--seconds / --rounds``
after a warm-up) and each time is the median over the rounds, so that load from other
processes falls on all of them alike.

    taskset -c 0 python benchmarks/members_forward.py --members 8 --batch 256
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import rlnorm
from rlnorm import members
from rlnorm.agents.offpolicy import mlp_critics
from rlnorm.nets import mlp
from rlnorm.safety import training

NETS: dict[str, tuple[int, Callable[[str], nn.Module]]] = {
    "mlp64": (4, lambda norm: mlp(4, 2, (64, 64), norm)),
    "critic256": (4, lambda norm: mlp_critics(2, 4, (256, 256), norm, "relu", "joint")),
}


def parse_args() -> argparse.Namespace:
    """Command-line options; the defaults reproduce results/members_forward.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--norms", nargs="+", default=["batch", "none", "batch_renorm"])
    parser.add_argument("--members", type=int, default=8, help="K")
    parser.add_argument("--batch", type=int, default=256, help="samples per member")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per cell")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per row")
    parser.add_argument("--clip", type=float, default=0.0, help="max_grad_norm (0: none)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return parser.parse_args()


def adam(module: nn.Module) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=1e-4, foreach=True)


def contenders(
    net: str, norm: str, k: int, batch: int, clip: float, device: str
) -> dict[str, Callable[[], None]]:
    """One training step per contender, on fixed inputs (member k: mean 3k, scale k+1)."""
    in_dim, build = NETS[net]
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(build(norm).to(device))
    stacked = members.stack(nets)
    one = nets[0]
    scale = torch.arange(k, device=device, dtype=torch.float32).view(k, 1, 1)
    x = 3 * scale + (scale + 1) * torch.randn(k, batch, in_dim, device=device)
    stacked_opt, opts, one_opt = adam(stacked), [adam(n) for n in nets], adam(one)

    def run_stacked() -> None:
        with training(stacked):
            stacked_opt.zero_grad(set_to_none=True)
            members.member_mean(stacked(x).pow(2)).backward()
            if clip:
                members.clip_grad_norm_(stacked.parameters(), clip)
            stacked_opt.step()

    def step(module: nn.Module, opt: torch.optim.Optimizer, inputs: torch.Tensor) -> None:
        with training(module):
            opt.zero_grad(set_to_none=True)
            module(inputs).pow(2).mean().backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
            opt.step()

    def run_loop() -> None:
        for i, (module, opt) in enumerate(zip(nets, opts, strict=True)):
            step(module, opt, x[i])

    def run_one() -> None:
        step(one, one_opt, x[0])

    return {"stacked": run_stacked, "loop": run_loop, "one": run_one}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(runs: dict[str, Callable[[], None]], seconds: float, rounds: int, device: str) -> dict:
    """Median seconds per step of each contender over interleaved rounds, after a warm-up."""
    per_round = seconds / rounds
    for run in runs.values():
        for _ in range(5):
            run()
        sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < per_round or calls < 2:
                run()
                calls += 1
            sync(device)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    """Time every contender for every network and norm and print a markdown table."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"rlnorm from {os.path.dirname(rlnorm.__file__)}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); {platform.processor() or platform.machine()}; "
        f"affinity {sorted(os.sched_getaffinity(0))}; device {args.device}; "
        f"K = {args.members}, batch {args.batch} per member, clip {args.clip or 'none'}"
    )
    k = args.members
    print(
        f"| net | norm | one (ms) | stacked K={k} (ms) | loop of {k} (ms) "
        "| stacked / one | loop / one | loop / stacked |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for net in args.nets:
        for norm in args.norms:
            runs = contenders(net, norm, k, args.batch, args.clip, args.device)
            t = timed(runs, args.seconds, args.rounds, args.device)
            print(
                f"| {net} | {norm} | {t['one'] * 1e3:.3g} | {t['stacked'] * 1e3:.3g} | "
                f"{t['loop'] * 1e3:.3g} | {t['stacked'] / t['one']:.2f}x | "
                f"{t['loop'] / t['one']:.2f}x | {t['loop'] / t['stacked']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
