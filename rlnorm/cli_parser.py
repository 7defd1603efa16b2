"""The arguments of the ``rlnorm`` command, apart from what the commands do
(:mod:`rlnorm.cli`); light to import, so ``rlnorm --help`` answers at once."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlnorm import plot_command, sweep
from rlnorm.config import positive_int_argument
from rlnorm.errors import ConfigError
from rlnorm.reproduce import command as reproduce_command

DESCRIPTION = "The rlnorm command: train, eval, audit, plot, list, reproduce, sweep."


def build_parser() -> argparse.ArgumentParser:
    """The ``rlnorm`` command line: every sub-command and flag (``docs/cli.md`` is generated
    from it by :func:`rlnorm.cli.reference`)."""
    parser = argparse.ArgumentParser(prog="rlnorm", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an agent; prints where its logs and checkpoint are")
    train.add_argument("--agent", default=None, help="agent name (default ppo; `rlnorm list`)")
    train.add_argument("--env", default=None, help="environment id (default CartPole-v1)")
    train.add_argument("--norm", default=None, help="normalization (default: the config's)")
    train.add_argument("--seed", type=int, default=None, help="default 0")
    train.add_argument(
        "--seeds",
        default=None,
        metavar="SEEDS",
        help="train several seeds in one process as a population on batched kernels, e.g. "
        "0-7 or 0,3,5 (native agents: ppo, sac, td3, crossq); member k is the run --seed k, "
        "each with its own run directory",
    )
    train.add_argument(
        "--steps",
        type=positive_int_argument,
        default=None,
        help="environment steps (default: the config's)",
    )
    train.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="default: runs/<agent>/<env>/<norm>/seed<k>-<timestamp>; with --seeds a "
        "template with {seed} in it",
    )
    train.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    train.add_argument(
        "--backend",
        choices=("auto", "native", "gymnasium"),
        default="auto",
        help="native torch env, or gymnasium's vector env through the adapter (auto: native "
        "where rlnorm has one)",
    )
    train.add_argument("--config", type=Path, default=None, help="a YAML config of your own")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set agent.lr=3e-4 (repeatable)",
    )
    train.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue RUN_DIR from checkpoints/last (same config; --steps may extend it); "
        "a --seeds population's population-<time> directory continues every member together",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="train into a non-empty --run-dir after moving its contents aside to "
        "<run-dir>.replaced-<time> (nothing is deleted); without it a non-empty run "
        "directory is refused",
    )
    train.add_argument(
        "--nan-policy",
        choices=("raise", "warn"),
        default=None,
        help="on a NaN/inf observation or reward: stop (default), or warn and drop that "
        "rollout; a NaN/inf loss or weight always stops the run",
    )
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="use torch's deterministic algorithms (train.deterministic=true): same seed, same "
        "weights on CUDA too, at some speed; CPU runs are deterministic without it",
    )
    train.add_argument(
        "--quiet", action="store_true", help="no progress bar (train.log in the run dir has it)"
    )

    ev = sub.add_parser("eval", help="evaluate a checkpoint in eval mode")
    ev.add_argument(
        "checkpoint",
        type=Path,
        help="a checkpoint directory, or a run directory (its checkpoints/best, else last)",
    )
    ev.add_argument(
        "--episodes",
        type=positive_int_argument,
        default=None,
        help="default: as many as the run's final evaluation",
    )
    ev.add_argument(
        "--seed", type=int, default=None, help="default: the seed the run's own evaluations used"
    )
    ev.add_argument(
        "--num-envs",
        type=positive_int_argument,
        default=None,
        help="default: the run's own evaluation env size",
    )
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    ev.add_argument("--json", action="store_true", help="print one JSON line")
    ev.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="GIF",
        help="also save one episode as an animated GIF (gymnasium's renderer of the env id; "
        "classic control needs pygame: pip install 'rlnorm[render]')",
    )

    for command in (train, ev):
        command.add_argument(
            "--threads",
            type=positive_int_argument,
            default=1,
            help="torch intra-op CPU threads (default 1: fastest for small networks, and immune "
            "to oversubscription when several runs share the cores)",
        )
    au = sub.add_parser(
        "audit",
        help="report what is unsafe about a checkpoint's normalization (exit 1 on an error)",
    )
    au.add_argument(
        "checkpoint",
        type=Path,
        help="a checkpoint directory, or a run directory (its checkpoints/best, else last)",
    )
    sub.add_parser("list", help="list agents, environments and normalizations")
    reproduce_command.add_parser(sub)
    plot_command.add_parser(sub)
    sweep.add_parser(sub)
    return parser


def parse_seeds(text: str) -> list[int]:
    """``"0-7"`` or ``"0,3,5"`` (or a mix, ``"0-3,8"``) as a list of distinct seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, sep, high = part.partition("-")
        try:
            chunk = list(range(int(low), int(high) + 1)) if sep else [int(part)]
        except ValueError:
            raise ConfigError(
                f"--seeds {text!r}: expected seeds like 0-7 or 0,3,5 (non-negative integers)"
            ) from None
        if not chunk or min(chunk) < 0:
            raise ConfigError(f"--seeds {text!r}: {part!r} names no non-negative seed")
        seeds += chunk
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} names a seed twice")
    return seeds
