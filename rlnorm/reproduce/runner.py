"""How every reproduction runs: one trial is one ordinary training run (the learner, the
shipped configs, eval-mode acting), trials run in parallel processes with a progress bar,
and each yields a measured row and an evaluation curve (:mod:`rlnorm.reproduce.report`
turns them into files).

A reproduction (one file beside this one) lists its :class:`Trial` s for a budget;
nothing here knows what a reproduction reproduces.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlnorm import agents, config, envs
from rlnorm.agent import Agent
from rlnorm.audit import audit
from rlnorm.diagnostics import StreamWatch
from rlnorm.errors import UnknownNameError
from rlnorm.learner import Learner
from rlnorm.population import PopulationLearner, population_supported
from rlnorm.rollout import evaluate, uniform_actions
from rlnorm.safety import training

#: The budgets of ``rlnorm reproduce --budget``; ``tiny`` is the tests' (one seed, seconds).
BUDGETS = ("tiny", "quick", "full")

#: Builds the agent of a trial (a module-level function, so trials pickle to workers).
AgentFactory = Callable[[type[Agent], Any, config.RunConfig], Agent]
#: Measures more of a trained agent: ``(agent, trial, eval_env) -> extra result columns``.
PostHook = Callable[[Agent, "Trial", Any], dict[str, Any]]


@dataclass(frozen=True)
class Trial:
    """One training run: ``agent`` on ``env`` with ``norm`` and config overrides.

    ``make_agent`` replaces the registered class's constructor (the reproductions' unsafe
    variants); ``post`` measures the trained agent further. Both must be module-level
    functions so that a trial can be sent to a worker process.
    """

    variant: str
    agent: str
    env: str
    norm: str
    seed: int
    steps: int
    overrides: tuple[str, ...] = ()
    config_file: str | None = None
    backend: str = "auto"
    eval_points: int = 10
    eval_episodes: int = 10
    final_episodes: int = 20
    make_agent: AgentFactory | None = None
    post: PostHook | None = None


@dataclass
class TrialResult:
    """A trial's measured row (``results.csv``) and evaluation curve (``curves.csv``)."""

    row: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)


#: The commit a reproduction started from (set by :func:`rlnorm.reproduce.run`), so that
#: edits made while it runs do not change what its README says it ran.
REVISION = ""


def commit() -> str:
    """The git commit the code runs from (``-dirty`` with uncommitted changes), if known."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head + ("-dirty" if dirty else "")) if head else "unknown"


def packaged_config(relative: str) -> str:
    """The path of a config file shipped with rlnorm, e.g. ``"td3/ddpg-Pendulum-v1.yaml"``."""
    return str(config.packaged_configs_dir() / relative)


def build_agent(cls: type[Agent], env: Any, cfg: config.RunConfig) -> Agent:
    """The registered agent class, as ``rlnorm train`` builds it."""
    return cls(env.single_observation_space, env.single_action_space, cfg.agent_config, cfg.norm)


def run_config(trial: Trial) -> config.RunConfig:
    """The trial's resolved run config: the agent's config for the env (or the trial's
    file), the overrides, and the evaluation schedule of the budget."""
    every = max(1, trial.steps // trial.eval_points)
    schedule = [
        f"train.eval_every={every}",
        f"train.eval_episodes={trial.eval_episodes}",
        f"train.final_eval_episodes={trial.final_episodes}",
        f"train.eval_num_envs={min(10, trial.eval_episodes, trial.final_episodes)}",
        "train.checkpoint_every=0",
        "train.keep_checkpoints=0",
        f"train.log_every={trial.steps}",
    ]
    cfg = config.resolve(
        agents.get(trial.agent),
        trial.env,
        norm=trial.norm,
        seed=trial.seed,
        config_file=trial.config_file,
        overrides=[*schedule, *trial.overrides],
        total_steps=trial.steps,
    )
    cfg.backend = trial.backend
    return cfg


def audit_text(agent: Agent, watch: StreamWatch | None = None) -> str:
    """``rlnorm audit``'s warnings and errors on ``agent`` as it is at rest (and on the
    update ``watch`` watched), one per line."""
    return "\n".join(
        f"{f.severity}: {f.path}: {f.message}"
        for f in audit(agent, watch=watch)
        if f.severity != "info"
    )


def audit_after_update(agent: Agent) -> str:
    """:func:`audit_text` of ``agent`` with one more update on its replay buffer watched,
    so that statistics shared by separate passes of different streams are found (they
    show only while an update runs)."""
    with training(*agent.modules().values()), StreamWatch(agent.modules()) as watch:
        agent.update(agent.replay, 1.0)  # type: ignore[attr-defined]
    return audit_text(agent, watch)


def train_trial(trial: Trial) -> TrialResult:
    """Train one trial in a scratch directory; measure its final return, its area under the
    evaluation curve, its wall time, and what ``rlnorm audit`` says of the trained agent
    (the learner's audit after the first update, which watches the streams, included)."""
    torch.set_num_threads(1)
    cfg = run_config(trial)
    torch.manual_seed(trial.seed)
    env = envs.make(cfg.env, num_envs=cfg.train.num_envs, backend=trial.backend)
    eval_env = envs.make(cfg.env, num_envs=cfg.train.eval_num_envs, backend=trial.backend)
    cls = agents.get(trial.agent)
    agent = (trial.make_agent or build_agent)(cls, env, cfg)
    with tempfile.TemporaryDirectory(prefix="rlnorm-reproduce-") as run_dir:
        learner = Learner(agent, env, eval_env, cfg, run_dir, quiet=True)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = learner.train()
        wall = time.perf_counter() - start
        lines = (Path(run_dir) / "eval.jsonl").read_text().splitlines()
    result_row = _measured(
        trial, agent, eval_env, lines, caught, result.env_steps, result.final_eval, wall
    )
    env.close()
    eval_env.close()
    return result_row


def train_population(trials: Sequence[Trial]) -> list[TrialResult]:
    """Train trials that differ only in their seed as one population in this process
    (:mod:`rlnorm.population`: member ``k`` is the run of seed ``k``); each member is then
    measured like a trial of its own. ``wall_s`` is the population's wall time shared out
    evenly over its members."""
    torch.set_num_threads(1)
    first = trials[0]
    cfg = run_config(first)

    def make_env(num_envs: int) -> Any:
        return envs.make(cfg.env, num_envs=num_envs, backend=first.backend)

    results = []
    with tempfile.TemporaryDirectory(prefix="rlnorm-reproduce-") as tmp:
        run_dirs = [Path(tmp, f"seed{t.seed}") for t in trials]
        learner = PopulationLearner(
            agents.get(first.agent),
            cfg,
            [t.seed for t in trials],
            run_dirs,
            Path(tmp, "population"),
            make_env,
            quiet=True,
        )
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            population = learner.train()
        wall = (time.perf_counter() - start) / len(trials)
        off_policy = hasattr(learner.population, "replay")
        for k, (trial, member) in enumerate(zip(trials, population.members, strict=True)):
            agent = learner.agents[k]
            if off_policy:  # the member's own replay, as its trial alone would hold it
                agent.replay = learner.member_replay(k)  # type: ignore[attr-defined]
            lines = (member.run_dir / "eval.jsonl").read_text().splitlines()
            eval_env = learner.eval_env.member_env(k)
            results.append(
                _measured(
                    trial, agent, eval_env, lines, caught, population.env_steps,
                    member.final_eval, wall,
                )
            )  # fmt: skip
            eval_env.close()
            if off_policy:
                agent.replay = None  # type: ignore[attr-defined]
    return results


def _measured(
    trial: Trial,
    agent: Agent,
    eval_env: Any,
    lines: list[str],
    caught: list[warnings.WarningMessage],
    env_steps: int,
    final: Any,
    wall: float,
) -> TrialResult:
    """A trained trial's row and curve from its evaluation log and the warnings its
    training raised."""
    records = [json.loads(line) for line in lines]
    first_update = [str(w.message) for w in caught if str(w.message).startswith("audit:")]
    steps = np.array([r["step"] for r in records], dtype=float)
    means = np.array([r["mean"] for r in records], dtype=float)
    row: dict[str, Any] = {
        "variant": trial.variant,
        "env": trial.env,
        "agent": trial.agent,
        "norm": trial.norm,
        "seed": trial.seed,
        "steps": env_steps,
        "final_return": final.mean,
        "final_std": final.std,
        "auc": area_under_curve(steps, means),
        "wall_s": round(wall, 2),
        "audit_first_update": "\n".join(dict.fromkeys(first_update)),
        "audit_end": audit_text(agent),
    }
    if trial.post is not None:
        row |= trial.post(agent, trial, eval_env)
    curve = [
        {"variant": trial.variant, "env": trial.env, "seed": trial.seed, "step": s, "return": m}
        for s, m in zip(steps.tolist(), means.tolist(), strict=True)
    ]
    return TrialResult(row, curve)


def area_under_curve(steps: np.ndarray, returns: np.ndarray) -> float:
    """The mean return over training: the trapezoid area under the evaluation curve, from
    the first to the last evaluation, divided by that span (a lone point is its value)."""
    if len(steps) < 2:
        return float(returns.mean()) if len(returns) else float("nan")
    area = float(np.sum((returns[1:] + returns[:-1]) / 2 * np.diff(steps)))
    return area / float(steps[-1] - steps[0])


def select(trials: Sequence[Trial], envs: Sequence[str]) -> list[Trial]:
    """The ``trials`` on the env ids in ``envs`` (all of them when ``envs`` is empty); an
    id no trial uses is an error, so that a typo does not run nothing."""
    known = {t.env for t in trials}
    unknown = [e for e in envs if e not in known]
    if unknown:
        raise UnknownNameError("env of this reproduction", unknown[0], sorted(known))
    return [t for t in trials if not envs or t.env in envs]


def _init_worker() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")


def populations(trials: Sequence[Trial]) -> list[list[int]]:
    """The trials' indices grouped into what one process trains: trials that differ only
    in their seed, of an agent :mod:`rlnorm.population` trains as a population and built by
    its registered class (not a reproduction's unsafe variant), form one group; every
    other trial is a group of its own."""
    groups: dict[Any, list[int]] = {}
    for i, trial in enumerate(trials):
        together = trial.make_agent is None and population_supported(agents.get(trial.agent))
        key = replace(trial, seed=-1) if together else i
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _run_group(task: Callable[[Trial], TrialResult], group: list[Trial]) -> list[TrialResult]:
    return train_population(group) if len(group) > 1 else [task(group[0])]


def trial_identity(trial: Trial) -> dict[str, Any]:
    """What makes a trial the same trial again: its fields, the functions that build and
    measure it by name, and its config file by content (a shipped file edited since gives
    another identity)."""
    identity: dict[str, Any] = {
        name: getattr(trial, name)
        for name in Trial.__dataclass_fields__
        if name not in ("make_agent", "post", "config_file", "overrides")
    }
    identity["overrides"] = list(trial.overrides)
    for name in ("make_agent", "post"):
        identity[name] = _function_name(getattr(trial, name))
    if trial.config_file is not None:
        text = Path(trial.config_file).read_bytes()
        identity["config_file"] = [Path(trial.config_file).name, hashlib.sha256(text).hexdigest()]
    return identity


def _function_name(fn: Callable[..., Any] | None) -> str | None:
    """``module.name`` of a trial's function; a ``functools.partial`` with its arguments."""
    if fn is None:
        return None
    if isinstance(fn, functools.partial):
        bound = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in fn.keywords.items()]
        return f"{_function_name(fn.func)}({', '.join(bound)})"
    return f"{fn.__module__}.{fn.__qualname__}"


class TrialStore:
    """Finished trials kept as JSON files in a folder (``OUT/trials/``), so that a
    reproduction stopped part-way (a crash, a kill, a split over machines) reruns only the
    trials it has not finished. A file whose trial differs, or that does not parse, is not
    used; each row records the commit that trained it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _where(self, trial: Trial) -> tuple[dict[str, Any], Path]:
        """The trial's identity and the file it is kept in (named by the identity's hash)."""
        identity = trial_identity(trial)
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        return identity, self.folder / f"{trial.env}-seed{trial.seed}-{digest}.json"

    def path(self, trial: Trial) -> Path:
        """The file ``trial`` is kept in."""
        return self._where(trial)[1]

    def load(self, trial: Trial) -> TrialResult | None:
        """The stored result of ``trial``, or ``None``."""
        identity, path = self._where(trial)
        try:
            data = json.loads(path.read_text())
            if data["trial"] != json.loads(json.dumps(identity)):
                return None
            return TrialResult(dict(data["row"]), list(data["curve"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, trial: Trial, result: TrialResult) -> None:
        """Keep ``result``, written whole or not at all."""
        self.folder.mkdir(parents=True, exist_ok=True)
        identity, path = self._where(trial)
        data = {"trial": identity, "row": result.row, "curve": result.curve}
        unfinished = path.with_suffix(".part")
        unfinished.write_text(json.dumps(data, allow_nan=True))
        unfinished.replace(path)


def run_trials(
    trials: Sequence[Trial],
    workers: int = 1,
    desc: str = "",
    task: Callable[[Trial], TrialResult] = train_trial,
    together: bool = True,
    store: Path | None = None,
) -> list[TrialResult]:
    """Run ``task`` on every trial, ``workers`` processes at a time, with a progress bar;
    results come back in the order of ``trials``. With ``together`` (and the default
    task), the seeds of a variant train as one population (:func:`populations`). With a
    ``store`` folder, trials finished there before are read back instead of run again, and
    each trial is kept there as it finishes (:class:`TrialStore`)."""
    kept = TrialStore(store) if store is not None else None
    results: list[TrialResult | None] = [kept.load(t) if kept is not None else None for t in trials]
    remaining = [i for i, r in enumerate(results) if r is None]
    groups = (
        [[remaining[j] for j in g] for g in populations([trials[i] for i in remaining])]
        if together and task is train_trial
        else [[i] for i in remaining]
    )
    bar = tqdm(total=len(trials), desc=desc, unit="run", leave=True)
    bar.update(len(trials) - len(remaining))
    revision = REVISION or commit()

    def done(group: list[int], group_results: list[TrialResult]) -> None:
        for i, result in zip(group, group_results, strict=True):
            result.row["commit"] = revision
            results[i] = result
            if kept is not None:
                kept.save(trials[i], result)
        bar.update(len(group))

    if workers <= 1:
        for group in groups:
            done(group, _run_group(task, [trials[i] for i in group]))
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            futures = {
                pool.submit(_run_group, task, [trials[i] for i in group]): j
                for j, group in enumerate(groups)
            }
            for future in as_completed(futures):
                done(groups[futures[future]], future.result())
    bar.close()
    return [r for r in results if r is not None]


def random_returns(env_id: str, episodes: int, seed: int, backend: str = "auto") -> np.ndarray:
    """Returns of a uniform random policy over ``episodes`` episodes (a normalized score's
    zero), measured."""

    class _Uniform(Agent):
        name = "uniform"

        def acting_modules(self) -> list[torch.nn.Module]:
            return []

        def act(self, obs: torch.Tensor, deterministic: bool = False) -> Any:
            from rlnorm.agent import ActOutput

            return ActOutput(uniform_actions(self.action_space, obs.shape[0], obs.device))

    env = envs.make(env_id, num_envs=min(10, episodes), backend=backend)
    torch.manual_seed(seed)
    agent = _Uniform(env.single_observation_space, env.single_action_space, None, "none")
    returns = evaluate(agent, env, episodes, deterministic=False, seed=seed).returns
    env.close()
    return returns
