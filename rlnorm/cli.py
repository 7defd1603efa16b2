"""The ``rlnorm`` command: ``train``, ``eval``, ``audit``, ``plot``, ``list``, ``reproduce``,
``sweep``.

The top floor of the house: with the package facade (``rlnorm/__init__``) it is the only
module that imports both the core and the plug-in folders (``rlnorm.agents``,
``rlnorm.envs``); the layer contract in ``.importlinter`` holds everything else below.

Heavy modules (torch, the agents, the envs) are imported inside the commands that need
them, so ``rlnorm --help`` and argument errors answer at once.

Exit status 2 means the command was given something invalid (an unknown agent, env or
norm, a bad config); the message on stderr names it and lists what is valid.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlnorm import catalog, config, plot_command, process, sweep
from rlnorm.cli_parser import build_parser, parse_seeds
from rlnorm.errors import CheckpointError, ConfigError, RlnormError, RunDirError
from rlnorm.reproduce import command as reproduce_command

if TYPE_CHECKING:
    import torch

    from rlnorm.learner import TrainResult


def _device(name: str) -> torch.device:
    import torch

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
    from gymnasium.spaces import Discrete

    from rlnorm import agents, envs, rundir
    from rlnorm.learner import Learner

    device = _device(args.device)
    if args.resume is not None:
        return _resume(args, device)
    if args.seeds is not None and args.seed is not None:
        raise ConfigError("--seeds names every member's seed: leave out --seed")
    if args.seeds is not None and args.run_dir is not None and "{seed}" not in str(args.run_dir):
        raise ConfigError(
            "with --seeds, --run-dir is a template with {seed} in it (runs/x/seed{seed}), "
            "one run directory per member"
        )
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
    # No ":" in the default path (sb3:PPO, module:Env-v0): shells and tools trip on it.
    parts = (cfg.agent.replace(":", "-"), cfg.env.replace(":", "-"), cfg.norm)
    if args.seeds is not None:
        return _train_population(args, cfg, parts, device)
    run_dir = args.run_dir or Path(
        "runs", *parts, f"seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    command = shlex.join(["rlnorm", *args.argv])
    with rundir.claim(run_dir, overwrite=args.overwrite, command=command) as moved:
        if moved is not None:
            print(f"moved the previous contents of {run_dir} to {moved}")
        try:
            (run_dir / "config.yaml").write_text(config.dump(cfg))
            (run_dir / "command.txt").write_text(command + "\n")
        except OSError as e:
            raise RunDirError(f"cannot write the run directory {run_dir}: {e.strerror or e}") from e
        env, eval_env = _envs(cfg, device)
        space = env.single_action_space
        try:
            learner = Learner.create(
                agents.get(cfg.agent), env, eval_env, cfg, run_dir, quiet=args.quiet
            )
        except ConfigError as e:  # an off-policy agent refuses a Discrete env: name those that fit
            if isinstance(space, Discrete) and "Box" in str(e):
                hint = "for a Discrete action space: ppo, sb3:DQN, sb3:A2C"
                raise ConfigError(f"{e}; {hint}") from None
            raise
        return _report(cfg, learner.train())


def _train_population(
    args: argparse.Namespace,
    cfg: config.RunConfig,
    parts: tuple[str, ...],
    device: torch.device,
    resume_runs: list[Path] | None = None,
) -> int:
    """``train --seeds``: one member per seed, trained together, each in its own run
    directory (:mod:`rlnorm.population`); with ``resume_runs``, those members continue."""
    import contextlib
    import dataclasses

    from rlnorm import agents, envs, rundir
    from rlnorm.population import PopulationLearner

    seeds = parse_seeds(args.seeds)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if resume_runs is not None:  # --resume POPULATION_DIR: its members' own directories
        population_dir, run_dirs = args.resume, resume_runs
    elif args.run_dir is None:
        template = str(Path("runs", *parts, f"seed{{seed}}-{stamp}"))
        population_dir = Path("runs", *parts, f"population-{stamp}")
    else:
        template = str(args.run_dir)
        population_dir = Path(template.replace("{seed}", "population"))
    if resume_runs is None:
        run_dirs = [Path(template.replace("{seed}", str(seed))) for seed in seeds]
    command = shlex.join(["rlnorm", *args.argv])
    with contextlib.ExitStack() as claims:
        for run_dir, seed in zip(run_dirs, seeds, strict=True):
            resume = resume_runs is not None
            claims.enter_context(
                rundir.claim(run_dir, resume=resume, overwrite=args.overwrite, command=command)
            )
            if not resume:
                config_file = dataclasses.replace(cfg, seed=seed)
                (run_dir / "config.yaml").write_text(config.dump(config_file))
            with open(run_dir / "command.txt", "a" if resume else "w") as f:
                f.write(command + "\n")

        def make_env(num_envs: int) -> Any:
            return envs.make(cfg.env, num_envs=num_envs, device=device, backend=cfg.backend)

        learner = PopulationLearner(
            agents.get(cfg.agent), cfg, seeds, run_dirs, population_dir, make_env, args.quiet
        )
        if resume_runs is not None:
            learner.restore()
            print(f"resuming {len(seeds)} seeds at env step {learner.env_steps} each")
        result = learner.train()
    print(
        f"trained {len(seeds)} seeds of {cfg.agent} ({cfg.norm} norm) on {cfg.env} in one "
        f"process: {result.env_steps} env steps each in {result.wall_time:.1f} s"
    )
    rlnorm = _program("rlnorm")
    for member in result.members:
        final = member.final_eval
        print(
            f"seed {member.seed}: final evaluation {final.mean:.2f} +- {final.std:.2f} over "
            f"{len(final.returns)} episodes   ({rlnorm} eval {member.last_checkpoint})"
        )
    logs = population_dir.parent
    print(f"TensorBoard logs:  {logs}   (view: {_program('tensorboard')} --logdir {logs})")
    return 0


def _envs(cfg: config.RunConfig, device: torch.device) -> tuple[Any, Any]:
    from rlnorm import envs

    return (
        envs.make(cfg.env, num_envs=cfg.train.num_envs, device=device, backend=cfg.backend),
        envs.make(cfg.env, num_envs=cfg.train.eval_num_envs, device=device, backend=cfg.backend),
    )


def _resume(args: argparse.Namespace, device: torch.device) -> int:
    """``train --resume RUN_DIR``: the run's own config, from its last checkpoint."""
    from rlnorm import agents, checkpoint, rundir
    from rlnorm.learner import Learner

    fixed = {
        "--agent": args.agent,
        "--env": args.env,
        "--norm": args.norm,
        "--seed": args.seed,
        "--config": args.config,
        "--run-dir": args.run_dir,
        "--seeds": args.seeds,
    }
    given = [flag for flag, value in fixed.items() if value is not None]
    if given or args.overrides or args.nan_policy or args.deterministic:
        raise RlnormError(
            f"--resume continues a run with its own config; drop {', '.join(given) or '--set'}"
            " (only --steps, --device, --threads and --quiet may change)"
        )
    population = rundir.read_population(args.resume)
    if population is not None:  # a population's directory: its members continue together
        seeds, runs = population
        run = checkpoint.read_meta(runs[0] / "checkpoints" / "last").run
        if run is None:
            raise CheckpointError(f"{args.resume}: its first member records no run config")
        cfg = config.from_dict(run.config, agents.get)
        cfg.train.total_steps, cfg.device = args.steps or cfg.train.total_steps, str(device)
        args.seeds = ",".join(map(str, seeds))
        return _train_population(args, cfg, (cfg.agent, cfg.env, cfg.norm), device, runs)
    last = args.resume / "checkpoints" / "last"
    if not args.resume.is_dir():
        raise RlnormError(f"--resume {args.resume}: no such run directory")
    if not last.exists() and not last.with_name(".last.old").exists():
        raise RlnormError(f"--resume {args.resume}: no checkpoints/last to resume from")
    command = shlex.join(["rlnorm", *args.argv])
    with rundir.claim(args.resume, resume=True, overwrite=args.overwrite, command=command):
        meta = checkpoint.read_meta(last)
        if meta.run is None:
            raise CheckpointError(f"{last}: records no run config to resume")
        cfg = config.from_dict(meta.run.config, agents.get)
        if args.steps is not None:
            cfg.train.total_steps = args.steps
        cfg.device = str(device)
        try:
            with open(args.resume / "command.txt", "a") as f:
                f.write(command + "\n")
        except OSError as e:
            raise RunDirError(f"cannot write the run directory {args.resume}: {e.strerror}") from e
        agent = checkpoint.load(last, agents.get, device)
        env, eval_env = _envs(cfg, device)
        learner = Learner(agent, env, eval_env, cfg, args.resume, quiet=args.quiet)
        learner.restore(last)
        print(f"resuming {args.resume} at env step {learner.env_steps} of {cfg.train.total_steps}")
        return _report(cfg, learner.train())


def _program(name: str) -> str:
    """``name`` as a hint copied into a shell runs the program installed beside the running
    Python (``.venv/bin/pip``, not another environment's): bare where PATH finds that one,
    else its path, relative when under the working directory; bare if there is none beside."""
    beside = Path(sys.executable).parent / name
    if not beside.exists():
        return name
    found = shutil.which(name)
    if found is not None and Path(found).resolve() == beside.resolve():
        return name
    relative = os.path.relpath(beside)
    return shlex.quote(str(beside) if relative.startswith("..") else relative)


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
    tensorboard, rlnorm = _program("tensorboard"), _program("rlnorm")
    tb_dir, last = shlex.quote(str(result.tb_dir)), shlex.quote(str(result.last_checkpoint))
    print(f"TensorBoard logs:  {result.tb_dir}   (view: {tensorboard} --logdir {tb_dir})")
    print(f"checkpoint:        {result.last_checkpoint}   ({rlnorm} eval {last})")
    return 0


def _checkpoint_path(path: Path) -> Path:
    """A checkpoint directory as given, or a run directory's best (else last) checkpoint."""
    for name in ("best", "last"):
        candidate = path / "checkpoints" / name
        if candidate.is_dir() or candidate.with_name(f".{name}.old").is_dir():
            return candidate
    if (path / "config.yaml").is_file():  # a run directory that never wrote a checkpoint
        train = config.read_yaml(path / "config.yaml").get("train", {})
        first = min(
            v for k in ("checkpoint_every", "eval_every", "total_steps") if (v := train.get(k))
        )
        raise RlnormError(
            f"{path} has no checkpoint: the run stopped (or is still running) before its first "
            f"one, due with the first update at or after env step {first:,} (the smallest of "
            "train.checkpoint_every, eval_every and total_steps)"
        )
    return path


def _eval(args: argparse.Namespace) -> int:
    from rlnorm import agents, checkpoint, envs
    from rlnorm.render import render_episode
    from rlnorm.rollout import evaluate

    device = _device(args.device)
    path = _checkpoint_path(args.checkpoint)
    meta = checkpoint.read_meta(path)
    agent = checkpoint.load(path, agents.get, device)
    # Defaults replay the run's own evaluation: same seed, same split of episodes over envs.
    run = meta.run
    if args.seed is not None:
        seed = config.check_seed(args.seed, "--seed")
    else:
        seed = config.eval_seed(run.seed if run else 0)
    num_envs = args.num_envs or (run.train.eval_num_envs if run else 20)
    if num_envs > config.MAX_ENVS:
        raise RlnormError(f"--num-envs {num_envs}: at most {config.MAX_ENVS}")
    episodes = args.episodes or (run.train.final_eval_episodes if run else 100)
    backend = run.backend if run else "auto"
    env = envs.make(meta.env_id, num_envs=num_envs, device=device, backend=backend)
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
            f"{meta.agent} ({meta.norm} norm) on {meta.env_id}: mean return "
            f"{result.mean:.2f} +- {result.std:.2f} over {len(result.returns)} episodes"
        )
    if args.render is not None:
        frames = render_episode(agent, meta.env_id, args.render, seed=seed)
        print(f"rendered one episode ({frames} frames) to {args.render}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from rlnorm import agents
    from rlnorm.audit import audit_checkpoint, format_findings

    path = _checkpoint_path(args.checkpoint)
    findings = audit_checkpoint(path, agents.get)
    print(f"{path}:")
    print(format_findings(findings))
    return 1 if any(f.severity == "error" for f in findings) else 0


def _list(_: argparse.Namespace) -> int:
    """Print what rlnorm can run. It reads the torch-free tables (:mod:`rlnorm.catalog`, the
    agent registry's names, gymnasium's registry), so it answers without importing torch."""
    from rlnorm import agents

    print("agents:")
    for name in agents.names():
        shipped = config.packaged_config_names(name)
        print(f"  {name:12s} {_agent_description(name)}")
        print(f"  {'':12s} configs: {', '.join(shipped) or '-'}")
    print("environments (native torch, on any device):")
    for env_id in catalog.NATIVE_ENVS:
        print(f"  {env_id}")
    print("environments through gymnasium's vector env (`--backend gymnasium`, or any id above):")
    needs = {i: catalog.missing_extra(i) for i in catalog.gymnasium_env_ids()}
    marked = [f"{i} (needs {n[0]})" if n else i for i, n in needs.items()]
    print(textwrap.fill(", ".join(marked), 88, initial_indent="  ", subsequent_indent="  "))
    pip = _program("pip")
    for extra, requirement in sorted({n for n in needs.values() if n}):
        print(f"  (needs {extra}): not installed here; {pip} install {shlex.quote(requirement)}")
    print("normalizations:")
    for name, kind in catalog.NORMS.items():
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


def _agent_description(name: str) -> str:
    """One line on the agent ``name`` for ``rlnorm list``, without importing it."""
    if name in catalog.AGENTS:
        return catalog.AGENTS[name]
    if name in catalog.SB3_AGENTS:
        package = catalog.SB3_AGENTS[name].replace("_", "-")
        return f"{package}'s {name.partition(':')[2]}, trained inside rlnorm's harness"
    return "a plug-in agent (not shipped with rlnorm)"


def reference() -> str:
    """The CLI reference page (``docs/cli.md``), generated from the parser itself so that it
    cannot drift from the code; a test checks the committed page is current. Regenerate with
    ``python -c "from rlnorm import cli; print(cli.reference(), end='')" > docs/cli.md``."""

    def fixed_width(prog: str) -> argparse.HelpFormatter:
        return argparse.HelpFormatter(prog, width=90)

    parser = build_parser()
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
    args = build_parser().parse_args(argv)
    args.argv = argv
    if hasattr(args, "threads"):  # a command that computes
        process.prepare(args.threads)
    commands = {
        "train": _train,
        "eval": _eval,
        "audit": _audit,
        "list": _list,
        "plot": plot_command.run,
        "sweep": sweep.run,
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
