"""The ``rlnorm`` command: ``train``, ``eval``, ``audit``, ``plot``, ``list``, ``reproduce``.

The top floor of the house: with the package facade (``rlnorm/__init__``) it is the only
module that imports both the core and the plug-in folders (``rlnorm.agents``,
``rlnorm.envs``); the layer contract in ``.importlinter`` holds everything else below.

Exit status 2 means the command was given something invalid (an unknown agent, env or
norm, a bad config); the message on stderr names it and lists what is valid.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlnorm import agents, checkpoint, config, envs, norm, plot
from rlnorm.audit import audit_checkpoint, format_findings
from rlnorm.errors import RlnormError
from rlnorm.learner import EVAL_SEED_OFFSET, Learner, TrainResult
from rlnorm.render import render_episode
from rlnorm.reproduce import command as reproduce_command
from rlnorm.rollout import evaluate


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlnorm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train an agent; prints where its logs and checkpoint are")
    train.add_argument("--agent", default=None, help="agent name (default ppo; `rlnorm list`)")
    train.add_argument("--env", default=None, help="environment id (default CartPole-v1)")
    train.add_argument("--norm", default=None, help="normalization (default: the config's)")
    train.add_argument("--seed", type=int, default=None, help="default 0")
    train.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="environment steps (default: the config's)",
    )
    train.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="default: runs/<agent>/<env>/<norm>/seed<k>-<timestamp>",
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
        help="continue RUN_DIR from checkpoints/last (same config; --steps may extend it)",
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
        type=_positive_int,
        default=None,
        help="default: as many as the run's final evaluation",
    )
    ev.add_argument(
        "--seed", type=int, default=None, help="default: the seed the run's own evaluations used"
    )
    ev.add_argument(
        "--num-envs",
        type=_positive_int,
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
            type=_positive_int,
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
    plot.add_parser(sub)
    return parser


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RlnormError(f"--device {name!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RlnormError(
            f"--device {name}: CUDA is not available on this machine (use --device cpu)"
        )
    return device


def _train(args: argparse.Namespace) -> int:
    device = _device(args.device)
    if args.resume is not None:
        return _resume(args, device)
    agent_name, env_id = args.agent or "ppo", args.env or "CartPole-v1"
    # Fail early, before anything is written, on an unknown env or backend.
    envs.make(env_id, num_envs=1, backend=args.backend).close()
    overrides = list(args.overrides)
    if args.nan_policy is not None:
        overrides.append(f"train.nan_policy={args.nan_policy}")
    if args.deterministic:
        overrides.append("train.deterministic=true")
    cfg = config.resolve(
        agents.get(agent_name),
        env_id,
        norm=args.norm,
        seed=0 if args.seed is None else args.seed,
        device=str(device),
        config_file=args.config,
        overrides=overrides,
        total_steps=args.steps,
    )
    cfg.backend = args.backend
    run_dir = args.run_dir or Path("runs") / cfg.agent / cfg.env / cfg.norm / (
        f"seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.dump(cfg))
        (run_dir / "command.txt").write_text(shlex.join(["rlnorm", *args.argv]) + "\n")
    except OSError as e:
        raise RlnormError(f"cannot write the run directory {run_dir}: {e.strerror or e}") from e

    torch.manual_seed(cfg.seed)
    env, eval_env = _envs(cfg, device)
    cls = agents.get(cfg.agent)
    agent = cls(
        env.single_observation_space, env.single_action_space, cfg.agent_config, cfg.norm, device
    )
    learner = Learner(agent, env, eval_env, cfg, run_dir, quiet=args.quiet)
    return _report(cfg, learner.train())


def _envs(cfg: config.RunConfig, device: torch.device) -> tuple[Any, Any]:
    return (
        envs.make(cfg.env, num_envs=cfg.train.num_envs, device=device, backend=cfg.backend),
        envs.make(cfg.env, num_envs=cfg.train.eval_num_envs, device=device, backend=cfg.backend),
    )


def _resume(args: argparse.Namespace, device: torch.device) -> int:
    """``train --resume RUN_DIR``: the run's own config, from its last checkpoint."""
    fixed = {
        "--agent": args.agent,
        "--env": args.env,
        "--norm": args.norm,
        "--seed": args.seed,
        "--config": args.config,
        "--run-dir": args.run_dir,
    }
    given = [flag for flag, value in fixed.items() if value is not None]
    if given or args.overrides or args.nan_policy or args.deterministic:
        raise RlnormError(
            f"--resume continues a run with its own config; drop {', '.join(given) or '--set'}"
            " (only --steps, --device, --threads and --quiet may change)"
        )
    last = args.resume / "checkpoints" / "last"
    if not args.resume.is_dir():
        raise RlnormError(f"--resume {args.resume}: no such run directory")
    if not last.exists() and not last.with_name(".last.old").exists():
        raise RlnormError(f"--resume {args.resume}: no checkpoints/last to resume from")
    meta = checkpoint.read_meta(last)
    cfg = config.from_dict(meta.get("extra", {}).get("run_config", {}), agents.get)
    if args.steps is not None:
        cfg.train.total_steps = args.steps
    cfg.device = str(device)
    with open(args.resume / "command.txt", "a") as f:
        f.write(shlex.join(["rlnorm", *args.argv]) + "\n")
    agent = checkpoint.load(last, agents.get, device)
    env, eval_env = _envs(cfg, device)
    learner = Learner(agent, env, eval_env, cfg, args.resume, quiet=args.quiet)
    learner.restore(last)
    print(f"resuming {args.resume} at env step {learner.env_steps} of {cfg.train.total_steps}")
    return _report(cfg, learner.train())


def _report(cfg: config.RunConfig, result: TrainResult) -> int:
    final = result.final_eval
    print(
        f"trained {cfg.agent} ({cfg.norm} norm) on {cfg.env}: {result.env_steps} env steps "
        f"in {result.wall_time:.1f} s"
    )
    print(
        f"final evaluation:  mean return {final.mean:.2f} +- {final.std:.2f} "
        f"over {len(final.returns)} episodes (deterministic, eval mode)"
    )
    print(f"TensorBoard logs:  {result.tb_dir}   (view: tensorboard --logdir {result.tb_dir})")
    print(f"checkpoint:        {result.last_checkpoint}   (rlnorm eval {result.last_checkpoint})")
    return 0


def _checkpoint_path(path: Path) -> Path:
    """A checkpoint directory as given, or a run directory's best (else last) checkpoint."""
    for name in ("best", "last"):
        candidate = path / "checkpoints" / name
        if candidate.is_dir() or candidate.with_name(f".{name}.old").is_dir():
            return candidate
    return path


def _eval(args: argparse.Namespace) -> int:
    device = _device(args.device)
    path = _checkpoint_path(args.checkpoint)
    meta = checkpoint.read_meta(path)
    agent = checkpoint.load(path, agents.get, device)
    # Defaults replay the run's own evaluation: same seed, same split of episodes over envs.
    run_config = meta.get("extra", {}).get("run_config", {})
    seed = args.seed if args.seed is not None else run_config.get("seed", 0) + EVAL_SEED_OFFSET
    num_envs = args.num_envs or run_config.get("train", {}).get("eval_num_envs", 20)
    episodes = args.episodes or run_config.get("train", {}).get("final_eval_episodes", 100)
    backend = run_config.get("backend", "auto")
    env = envs.make(meta["env_id"], num_envs=num_envs, device=device, backend=backend)
    result = evaluate(agent, env, episodes, deterministic=not args.stochastic, seed=seed)
    if args.json:
        print(
            json.dumps(
                {
                    "mean_return": result.mean,
                    "std_return": result.std,
                    "episodes": len(result.returns),
                    "seed": seed,
                }
            )
        )
    else:
        print(
            f"{meta['agent']} ({meta['norm']} norm) on {meta['env_id']}: mean return "
            f"{result.mean:.2f} +- {result.std:.2f} over {len(result.returns)} episodes"
        )
    if args.render is not None:
        frames = render_episode(agent, meta["env_id"], args.render, seed=seed)
        print(f"rendered one episode ({frames} frames) to {args.render}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    path = _checkpoint_path(args.checkpoint)
    findings = audit_checkpoint(path, agents.get)
    print(f"{path}:")
    print(format_findings(findings))
    return 1 if any(f.severity == "error" for f in findings) else 0


def _list(_: argparse.Namespace) -> int:
    print("agents:")
    for name in agents.names():
        shipped = config.packaged_config_names(name)
        print(f"  {name:12s} configs: {', '.join(shipped) or '-'}")
    print("environments (native torch, on any device):")
    for env_id in envs.env_ids():
        print(f"  {env_id}")
    print("environments through gymnasium's vector env (`--backend gymnasium`, or any id above):")
    print(
        textwrap.fill(
            ", ".join(envs.gymnasium_env_ids()), 88, initial_indent="  ", subsequent_indent="  "
        )
    )
    print("normalizations:")
    for name in norm.names():
        kind = norm.get(name)
        flags = [
            f
            for f, on in (
                ("batch-dependent", kind.batch_dependent),
                ("mode-dependent", kind.mode_dependent),
            )
            if on
        ]
        print(f"  {name:12s} {kind.description}" + (f" [{', '.join(flags)}]" if flags else ""))
    return 0


def reference() -> str:
    """The CLI reference page (``docs/cli.md``), generated from the parser itself so that it
    cannot drift from the code; a test checks the committed page is current. Regenerate with
    ``python -c "from rlnorm import cli; print(cli.reference(), end='')" > docs/cli.md``."""

    def fixed_width(prog: str) -> argparse.HelpFormatter:
        return argparse.HelpFormatter(prog, width=90)

    parser = _parser()
    parser.formatter_class = fixed_width
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = [
        "# `rlnorm` command reference\n",
        "Generated from the CLI's own parser by `rlnorm.cli.reference()`; do not edit by hand.\n",
        f"```text\n{parser.format_help()}```\n",
    ]
    for name, command in sub.choices.items():
        command.formatter_class = fixed_width
        parts.append(f"## `rlnorm {name}`\n\n```text\n{command.format_help()}```\n")
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlnorm`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    if hasattr(args, "threads"):
        torch.set_num_threads(args.threads)
    commands = {
        "train": _train,
        "eval": _eval,
        "audit": _audit,
        "list": _list,
        "plot": plot.run,
        "reproduce": reproduce_command.run,
    }
    command = commands[args.command]
    try:
        return command(args)
    except RlnormError as e:
        print(f"rlnorm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
