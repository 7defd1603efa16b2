"""Which ``norm_update`` should BatchNorm PPO default to? A 5-seed study.

For each environment (CartPole-v1, Acrobot-v1), batch-dependent norm (``batch``,
``batch_renorm``), ``agent.norm_update`` (``frozen``: the update normalizes with the running
statistics, so it optimizes the very function that acted; ``batch``: plain train mode, each
minibatch normalized with its own statistics) and seed, run::

    rlnorm train --agent ppo --env ENV --norm NORM --seed SEED --set agent.norm_update=MODE
                 --run-dir ROOT/ENV/NORM/MODE/seedSEED --quiet --threads 1 [--steps N]

with the shipped config ``configs/ppo/ENV.yaml`` (everything else at its default), one run
at a time, and write a markdown table: the final deterministic evaluation's mean, min and
max over seeds, the mean of the best periodic evaluation, the first-minibatch diagnostics
averaged over every update (``norm/ppo/first_minibatch_clip_fraction`` and mean ``|ratio - 1|``,
``norm/ppo/first_minibatch_ratio_deviation``) and wall times.

A run whose ``summary.json`` exists under ROOT is not rerun, so an interrupted study
resumes where it stopped.

Usage: python benchmarks/ppo_norm_update_study.py [--root DIR] [--seeds 0 1 2 3 4]
           [--envs CartPole-v1 Acrobot-v1] [--steps N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

NORMS = ("batch", "batch_renorm")
MODES = ("frozen", "batch")
DIAGNOSTICS = ("norm/ppo/first_minibatch_clip_fraction", "norm/ppo/first_minibatch_ratio_deviation")
RLNORM = str(Path(sys.executable).with_name("rlnorm"))


def command(
    env: str, norm: str, mode: str, seed: int, run_dir: Path, steps: int | None
) -> list[str]:
    """The exact ``rlnorm train`` command of one run."""
    cmd = [RLNORM, "train", "--agent", "ppo", "--env", env, "--norm", norm, "--seed", str(seed)]
    cmd += ["--set", f"agent.norm_update={mode}", "--run-dir", str(run_dir)]
    # every update's diagnostics in TensorBoard, not means over train.log_every steps
    cmd += ["--quiet", "--threads", "1", "--set", "train.log_every=0"]
    return cmd + (["--steps", str(steps)] if steps else [])


def diagnostics(tb_dir: Path) -> dict[str, float]:
    """Each first-minibatch diagnostic averaged over every update of a run's TensorBoard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    return {
        tag: statistics.fmean(e.value for e in acc.Scalars(tag))
        for tag in DIAGNOSTICS
        if tag in tags
    }


def run(env: str, norm: str, mode: str, seed: int, root: Path, steps: int | None) -> dict:
    """Train one configuration (unless already done) and return its results."""
    run_dir = root / env / norm / mode / f"seed{seed}"
    result_file = run_dir / "study.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)  # a run interrupted midway starts afresh
    cmd = command(env, norm, mode, seed, run_dir, steps)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    result = {
        "command": shlex.join(cmd),
        "final": summary["final_eval"]["mean"],
        "best": summary["best_eval_mean"],
        "steps": summary["env_steps"],
        "train_s": summary["wall_time_s"],
        "wall_s": wall,
        **diagnostics(run_dir / "tb"),
    }
    result_file.write_text(json.dumps(result, indent=2))
    return result


def row(env: str, norm: str, mode: str, results: list[dict]) -> str:
    finals = [r["final"] for r in results]
    cells = [
        env,
        f"`{norm}`",
        f"`{mode}`",
        f"{statistics.fmean(finals):.1f}",
        f"{min(finals):.1f}",
        f"{max(finals):.1f}",
        " / ".join(f"{f:.1f}" for f in finals),
        f"{statistics.fmean(r['best'] for r in results):.1f}",
        f"{statistics.fmean(r.get(DIAGNOSTICS[0], float('nan')) for r in results):.4f}",
        f"{statistics.fmean(r.get(DIAGNOSTICS[1], float('nan')) for r in results):.2e}",
        f"{statistics.fmean(r['wall_s'] for r in results):.0f}",
        f"{sum(r['wall_s'] for r in results):.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/rlnorm-norm-update-study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1"])
    parser.add_argument(
        "--steps",
        nargs="*",
        default=[],
        metavar="ENV=N",
        help="environment steps per run for ENV (default: its config's total_steps)",
    )
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args()
    steps = {env: int(n) for env, _, n in (s.partition("=") for s in args.steps)}

    header = (
        "| env | `--norm` | `norm_update` | final mean | min | max | per seed | best (mean) "
        "| first-minibatch clip fraction | first-minibatch mean \\|ratio-1\\| "
        "| wall per run (s) | wall total (s) |\n|" + "---|" * 12
    )
    lines = [header]
    started = time.perf_counter()
    for env in args.envs:
        for norm in NORMS:
            for mode in MODES:
                results = [run(env, norm, mode, s, args.root, steps.get(env)) for s in args.seeds]
                lines.append(row(env, norm, mode, results))
                print(lines[-1], flush=True)
    commands = "\n".join(
        "    "
        + shlex.join(
            command(env, "NORM", "MODE", 0, args.root / env / "NORM/MODE/seedSEED", steps.get(env))
        ).replace("--seed 0", "--seed SEED")
        for env in args.envs
    )
    text = (
        "# BatchNorm PPO: `norm_update` frozen vs batch, 5 seeds\n\n"
        f"Generated by `python {shlex.join([sys.argv[0], *sys.argv[1:]])}`"
        f" on {time.strftime('%Y-%m-%d')}; one run at a time, 1 torch thread, CPU.\n"
        "Final: deterministic eval-mode evaluation at the end of the run (the config's"
        " `final_eval_episodes`); best: best periodic evaluation. First-minibatch columns:"
        " averaged over every update of every seed, measured before the update's first step."
        "\n\n" + "\n".join(lines) + "\n\n"
        f"Seeds: {' '.join(map(str, args.seeds))}. Each run, NORM in {', '.join(NORMS)},"
        f" MODE in {', '.join(MODES)}:\n\n{commands}\n\n"
        f"This invocation took {time.perf_counter() - started:.0f} s (runs already done"
        " under --root are read back, not rerun).\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
