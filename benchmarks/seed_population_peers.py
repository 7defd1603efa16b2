"""rlnorm's PPO seed populations beside stable-baselines3, sbx and a PureJaxRL-style JAX PPO.

PPO on CartPole-v1 with the RL Zoo hyperparameters rlnorm ships (``configs/ppo/CartPole-v1.yaml``:
8 envs x 32 steps, 20 epochs, minibatch 256, gamma 0.98, lambda 0.8, lr 1e-3 linearly
annealed, clip 0.2, no entropy bonus, vf 0.5, max grad norm 0.5, separate 64x64 tanh actor and
critic), ``--steps`` env steps per seed, every contender in its own process, one at a time,
each with one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, XLA's CPU client
without its Eigen thread pool):

- **rlnorm**: ``rlnorm train --agent ppo --env CartPole-v1 --norm none --quiet --threads 1``
  with ``--seed 0`` and with ``--seeds 0-(K-1)`` for each ``--sizes`` K, no periodic
  evaluation or checkpoint; and the shipped ``--norm batch`` for ``--seed 0`` and each
  ``--batch-sizes`` K;
- **SB3**: stable-baselines3's ``PPO("MlpPolicy")`` on a ``DummyVecEnv`` of 8 gymnasium
  CartPole-v1 (``make_vec_env``), one seed;
- **sbx**: sbx's (JAX) ``PPO("MlpPolicy")`` the same way, one seed;
- **JAX**: PPO written here in the PureJaxRL style (gymnax's CartPole-v1, the whole training
  run one jitted ``jax.lax.scan``), one seed, and K seeds with ``jax.vmap`` for each ``--sizes``
  K. Compilation is timed apart.

Every run ends with a final evaluation of each seed's greedy policy over 20 episodes (20
envs, one episode each). For each run the table gives the wall time of the whole process
(interpreter start-up, imports and compilation included), the compile time (JAX: lowering
and compiling the jitted training and evaluation; sbx, which compiles inside ``learn()`` for
each model: its first rollout and update's excess over the median one), the train time
(from the start of training to the end of the final evaluation, in-process, compilation
excluded: rlnorm's learner's ``train()``, ``learn()`` plus evaluation for SB3 and
sbx, the compiled training and evaluation calls for JAX), the process's CPU time over that
span (on a shared core, CPU time is what other processes inflate least), the aggregate env
steps/s over all seeds by train time and by train CPU time, the latter's ratio to rlnorm's
single seed (``--norm none``) and the seeds' final returns. rlnorm runs as its CLI's
``main`` inside a worker process, which times its learner's ``train()``. It prints
the table and writes it to ``benchmarks/results/seed_population_peers.md``. Needs the
``peers`` extra (``pip install -e ".[peers]"`` and ``pip install --no-deps gymnax``); a
contender whose packages are missing is reported as not run. Pin it to one core::

    taskset -c 1 python benchmarks/seed_population_peers.py [--steps 150000] [--sizes 8 32]
        [--batch-sizes 8] [--norms none batch] [--contenders rlnorm sb3 sbx jax]
        [--repeats 1] [--conditions TEXT] [--output FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import itertools
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from provenance import header

RESULTS = Path(__file__).parent / "results" / "seed_population_peers.md"
ENV_ID = "CartPole-v1"


SHIPPED = Path(__file__).resolve().parent.parent / "configs" / "ppo" / f"{ENV_ID}.yaml"


@dataclass(frozen=True)
class Hyper:
    """The hyperparameters rlnorm trains with, under neutral names; the peers use these."""

    num_envs: int
    rollout_steps: int
    epochs: int
    minibatch: int
    gamma: float
    gae_lambda: float
    lr: float
    clip: float
    ent_coef: float
    vf_coef: float
    max_grad_norm: float
    hidden: tuple[int, ...]

    @classmethod
    def shipped(cls) -> Hyper:
        """Read from ``configs/ppo/CartPole-v1.yaml``, so the peers follow the shipped config
        (they all anneal the learning rate linearly, as it does)."""
        config = yaml.safe_load(SHIPPED.read_text())
        agent = config["agent"]
        if not agent["anneal_lr"]:
            raise SystemExit(f"{SHIPPED}: the peers anneal the learning rate; this config does not")
        return cls(
            num_envs=config["train"]["num_envs"],
            rollout_steps=agent["rollout_steps"],
            epochs=agent["epochs"],
            minibatch=agent["minibatch_size"],
            gamma=agent["gamma"],
            gae_lambda=agent["gae_lambda"],
            lr=agent["lr"],
            clip=agent["clip_range"],
            ent_coef=agent["ent_coef"],
            vf_coef=agent["vf_coef"],
            max_grad_norm=agent["max_grad_norm"],
            hidden=tuple(agent["hidden"]),
        )


HP = Hyper.shipped()
EVAL_EPISODES = 20
# versions stated in the results file
PACKAGES = ("torch", "stable-baselines3", "sbx-rl", "jax", "flax", "optax", "gymnax", "gymnasium")
# One thread everywhere: BLAS/OpenMP for torch and numpy, XLA's CPU client without the Eigen
# thread pool (the script itself runs under taskset, so any stray thread shares the core).
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
}


@dataclass
class Row:
    """One timed run: a contender with a number of seeds."""

    contender: str
    seeds: int
    wall_s: float = math.nan
    train_s: float = math.nan
    train_cpu_s: float = math.nan
    compile_s: float | None = None
    env_steps: int = 0  # per seed
    returns: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def sps_train(self) -> float:
        return self.seeds * self.env_steps / self.train_s

    @property
    def sps_cpu(self) -> float:
        return self.seeds * self.env_steps / self.train_cpu_s


# ---------------------------------------------------------------- workers (run in subprocesses)


def worker_sb3(library: str, steps: int, seed: int) -> dict[str, Any]:
    """SB3's or sbx's PPO, one seed: train, then evaluate greedily on 20 envs."""
    import numpy as np
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    if library == "sb3":
        import stable_baselines3
        import torch

        torch.set_num_threads(1)
        algo: Any = stable_baselines3.PPO
        extra: dict[str, Any] = {"device": "cpu"}
        # SB3's MlpPolicy: separate 64x64 tanh actor and critic (its default, spelled out)
        policy_kwargs: dict[str, Any] = {
            "net_arch": {"pi": list(HP.hidden), "vf": list(HP.hidden)},
            "activation_fn": torch.nn.Tanh,
        }
    else:
        import sbx

        algo = sbx.PPO
        extra = {}
        policy_kwargs = {"net_arch": {"pi": list(HP.hidden), "vf": list(HP.hidden)}}

    def make(seed: int) -> Any:
        return algo(
            "MlpPolicy",
            make_vec_env(ENV_ID, n_envs=HP.num_envs, seed=seed),
            learning_rate=lambda remaining: HP.lr * remaining,  # linear annealing
            n_steps=HP.rollout_steps,
            batch_size=HP.minibatch,
            n_epochs=HP.epochs,
            gamma=HP.gamma,
            gae_lambda=HP.gae_lambda,
            clip_range=HP.clip,
            ent_coef=HP.ent_coef,
            vf_coef=HP.vf_coef,
            max_grad_norm=HP.max_grad_norm,
            policy_kwargs=policy_kwargs,
            seed=seed,
            verbose=0,
            **extra,
        )

    class Iterations(BaseCallback):
        """When each rollout starts: sbx compiles its jitted functions (per model, so no
        throwaway model can warm them up) during the first rollout and update."""

        def __init__(self) -> None:
            super().__init__()
            self.starts: list[tuple[float, float]] = []  # (wall, CPU)

        def _on_rollout_start(self) -> None:
            self.starts.append((time.perf_counter(), time.process_time()))

        def _on_step(self) -> bool:
            return True

    model, iterations = make(seed), Iterations()
    start, start_cpu = time.perf_counter(), time.process_time()
    model.learn(steps, callback=iterations if library == "sbx" else None)
    learn_s = time.perf_counter() - start
    compile_s, compile_cpu_s = None, 0.0
    if library == "sbx":
        # compilation: the first iteration's excess over the median iteration (each clock)
        excess = []
        for clock, origin in enumerate((start, start_cpu)):
            marks = [mark[clock] for mark in iterations.starts]
            times = sorted(b - a for a, b in itertools.pairwise(marks))
            excess.append(marks[1] - origin - times[len(times) // 2])
        compile_s, compile_cpu_s = excess
    eval_env = make_vec_env(ENV_ID, n_envs=EVAL_EPISODES, seed=seed + 10_000)
    returns = evaluate_policy(
        model,
        eval_env,
        n_eval_episodes=EVAL_EPISODES,
        deterministic=True,
        return_episode_rewards=True,
    )[0]
    train_s = time.perf_counter() - start - (compile_s or 0.0)
    train_cpu_s = time.process_time() - start_cpu - compile_cpu_s
    return {
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "learn_s": learn_s,
        "compile_s": compile_s,
        "env_steps": model.num_timesteps,
        "returns": [float(np.mean(returns))],
    }


def worker_jax(steps: int, seeds: int, vmapped: bool) -> dict[str, Any]:
    """PureJaxRL-style PPO: rollouts, GAE and updates of the whole run in one jitted scan;
    ``vmapped``: ``seeds`` independent runs (seeds 0..K-1) batched by ``jax.vmap``."""
    import flax.linen as nn
    import gymnax
    import jax
    import jax.numpy as jnp
    import optax

    env, env_params = gymnax.make(ENV_ID)
    n_envs, n_steps = HP.num_envs, HP.rollout_steps
    batch = n_envs * n_steps
    n_minibatches = batch // HP.minibatch
    # as SB3 and rlnorm: whole rollouts until at least `steps` env steps
    n_updates = -(-steps // batch)
    n_actions = env.action_space(env_params).n
    obs_shape = env.observation_space(env_params).shape

    class Mlp(nn.Module):
        out: int
        head_scale: float

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            # SB3's initialisation: orthogonal, gain sqrt(2) inside, small policy head
            for width in HP.hidden:
                x = nn.tanh(nn.Dense(width, kernel_init=nn.initializers.orthogonal(2**0.5))(x))
            return nn.Dense(self.out, kernel_init=nn.initializers.orthogonal(self.head_scale))(x)

    class ActorCritic(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
            return Mlp(n_actions, 0.01)(x), Mlp(1, 1.0)(x)[..., 0]

    net = ActorCritic()

    def forward(params: Any, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Logits and values (flax's ``apply`` is typed loosely)."""
        return cast(tuple[jax.Array, jax.Array], net.apply(params, obs))

    grad_steps_per_update = HP.epochs * n_minibatches

    def lr_schedule(count: jax.Array) -> jax.Array:
        # linear annealing per update (constant over the update's epochs), as SB3's schedule
        update = count // grad_steps_per_update
        return HP.lr * (1.0 - update / n_updates)

    tx = optax.chain(optax.clip_by_global_norm(HP.max_grad_norm), optax.adam(lr_schedule, eps=1e-5))
    v_reset = jax.vmap(env.reset, in_axes=(0, None))
    v_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def loss_fn(params: Any, mb: tuple[jax.Array, ...]) -> jax.Array:
        obs, action, old_logp, adv, ret = mb
        logits, value = forward(params, obs)
        logp_all = jax.nn.log_softmax(logits)
        logp = jnp.take_along_axis(logp_all, action[:, None], axis=1)[:, 0]
        ratio = jnp.exp(logp - old_logp)
        adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)  # per minibatch, as SB3
        clipped = jnp.clip(ratio, 1 - HP.clip, 1 + HP.clip)
        policy_loss = -jnp.minimum(ratio * adv, clipped * adv).mean()
        value_loss = ((ret - value) ** 2).mean()  # unclipped, no 1/2: SB3's value loss
        entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
        return policy_loss + HP.vf_coef * value_loss - HP.ent_coef * entropy

    def train(key: jax.Array) -> Any:
        key, k_init, k_reset = jax.random.split(key, 3)
        params = net.init(k_init, jnp.zeros((1, *obs_shape)))
        opt_state = tx.init(params)
        obs, env_state = v_reset(jax.random.split(k_reset, n_envs), env_params)

        def update(carry: tuple, xs: None) -> tuple[tuple, None]:
            params, opt_state, obs, env_state, key = carry

            def act(carry: tuple, xs: None) -> tuple[tuple, tuple]:
                obs, env_state, key = carry
                key, k_act, k_step = jax.random.split(key, 3)
                logits, value = forward(params, obs)
                action = jax.random.categorical(k_act, logits)
                logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], 1)[:, 0]
                next_obs, env_state, reward, terminated, truncated, info = v_step(
                    jax.random.split(k_step, n_envs), env_state, action, env_params
                )
                step = (obs, action, logp, value, reward, terminated, truncated)
                return (next_obs, env_state, key), (*step, info["final_observation"])

            (obs, env_state, key), rollout = jax.lax.scan(act, (obs, env_state, key), None, n_steps)
            r_obs, action, logp, value, reward, terminated, truncated, final_obs = rollout
            # a time limit is no terminal state: bootstrap from the last observation (SB3)
            final_value = forward(params, final_obs)[1]
            cut = truncated & ~terminated
            reward = reward + HP.gamma * final_value * cut
            done = (terminated | truncated).astype(jnp.float32)

            def gae(carry: tuple, step: tuple) -> tuple[tuple, jax.Array]:
                adv_next, value_next = carry
                reward, value, done = step
                live = 1.0 - done
                delta = reward + HP.gamma * value_next * live - value
                adv = delta + HP.gamma * HP.gae_lambda * live * adv_next
                return (adv, value), adv

            last_value = forward(params, obs)[1]
            _, adv = jax.lax.scan(
                gae, (jnp.zeros_like(last_value), last_value), (reward, value, done), reverse=True
            )
            data = (r_obs, action, logp, adv, adv + value)
            data = jax.tree.map(lambda x: x.reshape(batch, *x.shape[2:]), data)

            def epoch(carry: tuple, xs: None) -> tuple[tuple, None]:
                params, opt_state, key = carry
                key, k_perm = jax.random.split(key)
                perm = jax.random.permutation(k_perm, batch)
                mbs = jax.tree.map(lambda x: x[perm].reshape(n_minibatches, -1, *x.shape[1:]), data)

                def minibatch(carry: tuple, mb: tuple) -> tuple[tuple, None]:
                    params, opt_state = carry
                    grads = jax.grad(loss_fn)(params, mb)
                    updates, opt_state = tx.update(grads, opt_state, params)
                    return (optax.apply_updates(params, updates), opt_state), None

                (params, opt_state), _ = jax.lax.scan(minibatch, (params, opt_state), mbs)
                return (params, opt_state, key), None

            (params, opt_state, key), _ = jax.lax.scan(
                epoch, (params, opt_state, key), None, HP.epochs
            )
            return (params, opt_state, obs, env_state, key), None

        start = (params, opt_state, obs, env_state, key)
        final, _ = jax.lax.scan(update, start, None, n_updates)
        return final[0]  # the trained parameters

    def evaluate(params: Any, key: jax.Array) -> jax.Array:
        """Mean return of the greedy policy over 20 episodes, one per env."""
        k_reset, key = jax.random.split(key)
        obs, env_state = v_reset(jax.random.split(k_reset, EVAL_EPISODES), env_params)
        zeros = jnp.zeros(EVAL_EPISODES)

        def step(carry: tuple, xs: None) -> tuple[tuple, None]:
            obs, env_state, key, ret, live = carry
            key, k_step = jax.random.split(key)
            action = jnp.argmax(forward(params, obs)[0], axis=-1)
            obs, env_state, reward, terminated, truncated, _ = v_step(
                jax.random.split(k_step, EVAL_EPISODES), env_state, action, env_params
            )
            ret = ret + reward * live  # auto-reset: count each env's first episode only
            live = live * (1.0 - (terminated | truncated))
            return (obs, env_state, key, ret, live), None

        horizon = env_params.max_steps_in_episode
        carry = (obs, env_state, key, zeros, jnp.ones(EVAL_EPISODES))
        (*_, ret, _), _ = jax.lax.scan(step, carry, None, horizon)
        return ret.mean()

    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(seeds)])
    eval_keys = jnp.stack([jax.random.PRNGKey(10_000 + s) for s in range(seeds)])
    if vmapped:
        train_fn, eval_fn = jax.jit(jax.vmap(train)), jax.jit(jax.vmap(evaluate))
    else:
        keys, eval_keys = keys[0], eval_keys[0]
        train_fn, eval_fn = jax.jit(train), jax.jit(evaluate)
    start = time.perf_counter()
    train_c = train_fn.lower(keys).compile()
    params_shape = jax.eval_shape(train_fn, keys)
    eval_c = eval_fn.lower(params_shape, eval_keys).compile()
    compile_s = time.perf_counter() - start
    start, start_cpu = time.perf_counter(), time.process_time()
    params = jax.block_until_ready(train_c(keys))
    learn_s = time.perf_counter() - start
    returns = jax.block_until_ready(eval_c(params, eval_keys))
    train_s = time.perf_counter() - start
    return {
        "train_s": train_s,
        "train_cpu_s": time.process_time() - start_cpu,
        "learn_s": learn_s,
        "compile_s": compile_s,
        "env_steps": n_updates * batch,
        "returns": [float(r) for r in jnp.atleast_1d(returns)],
        "jax": jax.__version__,
    }


def worker_rlnorm(argv: list[str]) -> dict[str, Any]:
    """``rlnorm train`` in this process (``rlnorm.cli.main``, what the ``rlnorm`` command
    runs), timing its learner's ``train()`` (training, final evaluation, checkpoint) on the
    wall and CPU clocks; its run directories say the rest."""
    import contextlib
    import io

    from rlnorm.cli import main as rlnorm_main
    from rlnorm.learner import Learner
    from rlnorm.population import PopulationLearner

    spans: list[tuple[float, float]] = []

    def timed(train: Any) -> Any:
        def wrapper(self: Any) -> Any:
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                return train(self)
            finally:
                spans.append((time.perf_counter() - start, time.process_time() - start_cpu))

        return wrapper

    # the span the peers' train times cover: no CLI start-up, config or env building
    for cls in (Learner, PopulationLearner):
        cls.train = timed(cls.train)  # type: ignore[method-assign]
    with contextlib.redirect_stdout(io.StringIO()):
        code = rlnorm_main(argv)
    if code != 0 or len(spans) != 1:
        raise RuntimeError(f"rlnorm {shlex.join(argv)} exited {code} after {len(spans)} runs")
    return {"train_s": spans[0][0], "train_cpu_s": spans[0][1]}


# ---------------------------------------------------------------- driver


def run_worker(
    kind: str, steps: int, seeds: int, extra: tuple[str, ...] = (), cwd: str | None = None
) -> tuple[float, dict[str, Any]]:
    """This script as a subprocess in worker mode; its wall time and its JSON result."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", kind]
    argv += ["--steps", str(steps), "--seeds", str(seeds), *extra]
    start = time.perf_counter()
    out = subprocess.run(
        argv, cwd=cwd, env={**os.environ, **ONE_THREAD}, check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    return wall, json.loads(out.stdout.strip().splitlines()[-1])


def run_rlnorm(norm: str, steps: int, seeds: int | None) -> Row:
    """One ``rlnorm train`` (``--seed 0`` when ``seeds`` is None) in a scratch directory."""
    argv = ["train", "--agent", "ppo", "--env", ENV_ID, "--norm", norm, "--quiet",
            "--threads", "1", "--steps", str(steps),
            "--set", "train.eval_every=0", "--set", "train.checkpoint_every=0",
            "--set", f"train.final_eval_episodes={EVAL_EPISODES}"]  # fmt: skip
    argv += ["--seed", "0"] if seeds is None else ["--seeds", f"0-{seeds - 1}"]
    with tempfile.TemporaryDirectory() as tmp:
        wall, out = run_worker(
            "rlnorm", steps, seeds or 1, ("--rlnorm-argv", shlex.join(argv)), tmp
        )
        paths = sorted(Path(tmp).glob("runs/*/*/*/seed*/summary.json"))
        summaries = [json.loads(path.read_text()) for path in paths]
    name = f"rlnorm ({norm})" if seeds is not None else f"rlnorm ({norm}), --seed 0"
    return Row(
        name,
        len(summaries),
        wall,
        out["train_s"],
        out["train_cpu_s"],
        env_steps=summaries[0]["env_steps"],
        returns=[s["final_eval"]["mean"] for s in summaries],
    )


def installed(*modules: str) -> str | None:
    """None when every module imports, else the missing ones."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return ", ".join(missing) or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150_000, help="env steps per seed")
    parser.add_argument("--sizes", nargs="*", type=int, default=[8, 32])
    parser.add_argument("--batch-sizes", nargs="*", type=int, default=[8])
    parser.add_argument("--norms", nargs="*", default=["none", "batch"], choices=["none", "batch"])
    parser.add_argument(
        "--contenders", nargs="+", default=["rlnorm", "sb3", "sbx", "jax"],
        choices=["rlnorm", "sb3", "sbx", "jax"],
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of all contenders; rows give medians"
    )
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the results file")
    parser.add_argument(
        "--worker", choices=["rlnorm", "sb3", "sbx", "jax", "jax-vmap"], help=argparse.SUPPRESS
    )
    parser.add_argument("--rlnorm-argv", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "rlnorm":
        print(json.dumps(worker_rlnorm(shlex.split(args.rlnorm_argv))))
        return
    if args.worker in ("sb3", "sbx"):
        print(json.dumps(worker_sb3(args.worker, args.steps, 0)))
        return
    if args.worker is not None:
        print(json.dumps(worker_jax(args.steps, args.seeds, args.worker == "jax-vmap")))
        return
    # rounds one after another, each every contender once: load that comes and goes falls on
    # all contenders alike, and each row's times are the medians over the rounds
    rounds = [one_round(args) for _ in range(args.repeats)]
    write([median_row(group) for group in zip(*rounds, strict=True)], args)


def median_row(group: tuple[Row, ...]) -> Row:
    """One contender's rounds as one row: each time its median over the rounds."""

    first = group[0]
    if first.note:
        return first
    compile_s = (
        None if first.compile_s is None else statistics.median([r.compile_s or 0.0 for r in group])
    )
    row = Row(
        first.contender,
        first.seeds,
        statistics.median([r.wall_s for r in group]),
        statistics.median([r.train_s for r in group]),
        statistics.median([r.train_cpu_s for r in group]),
        compile_s,
    )
    row.env_steps, row.returns = first.env_steps, first.returns
    return row


def one_round(args: argparse.Namespace) -> list[Row]:
    """Every contender once, one after another."""
    rows: list[Row] = []

    def peer(name: str, kind: str, seeds: int, modules: tuple[str, ...]) -> None:
        missing = installed(*modules)
        if missing is not None:
            rows.append(Row(name, seeds, note=f"not run: {missing} not installed"))
        else:
            wall, out = run_worker(kind, args.steps, seeds)
            row = Row(name, seeds, wall, out["train_s"], out["train_cpu_s"], out.get("compile_s"))
            row.env_steps, row.returns = out["env_steps"], out["returns"]
            rows.append(row)
        print(table_line(rows[-1], rows), flush=True)

    if "rlnorm" in args.contenders:
        for norm, sizes in (("none", args.sizes), ("batch", args.batch_sizes)):
            if norm not in args.norms:
                continue
            for seeds in [None, *sizes]:
                rows.append(run_rlnorm(norm, args.steps, seeds))
                print(table_line(rows[-1], rows), flush=True)
    if "sb3" in args.contenders:
        peer("SB3 PPO", "sb3", 1, ("stable_baselines3",))
    if "sbx" in args.contenders:
        peer("sbx PPO", "sbx", 1, ("sbx", "jax"))
    if "jax" in args.contenders:
        modules = ("jax", "flax", "optax", "gymnax")
        peer("JAX PPO (PureJaxRL-style)", "jax", 1, modules)
        for seeds in args.sizes:
            peer("JAX PPO (PureJaxRL-style), vmap", "jax-vmap", seeds, modules)
    return rows


HEADER = (
    "| contender | seeds | wall s (process) | compile s | train s | train CPU s | env steps/s "
    "(all seeds, train) | env steps/s (all seeds, train CPU) | x rlnorm 1 seed (steps/s, "
    "train CPU) | final returns (min / median / max) |"
)


def table_line(row: Row, rows: list[Row]) -> str:
    """The row's markdown line; its ratio against rlnorm's ``--norm none --seed 0`` row."""
    if row.note:
        return f"| {row.contender} | {row.seeds} | {row.note} | | | | | | | |"
    base = next((r for r in rows if r.contender == "rlnorm (none), --seed 0"), None)
    ratio = "—" if base is None else f"{row.sps_cpu / base.sps_cpu:.2f}"
    finals = sorted(row.returns)
    spread = f"{finals[0]:.1f} / {finals[len(finals) // 2]:.1f} / {finals[-1]:.1f}"
    compile_s = "—" if row.compile_s is None else f"{row.compile_s:.1f}"
    return (
        f"| {row.contender} | {row.seeds} | {row.wall_s:.1f} | {compile_s} | {row.train_s:.1f} "
        f"| {row.train_cpu_s:.1f} | {row.sps_train:.0f} | {row.sps_cpu:.0f} | {ratio} "
        f"| {spread} |"
    )


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def software_line(packages: tuple[str, ...]) -> str:
    """The results header's software: each package's version and the one-thread settings."""
    versions = ", ".join(f"{p} {version(p)}" for p in packages)
    threads = " ".join(f"{k}={v}" for k, v in ONE_THREAD.items())
    return f"{versions}; one thread per process (`{threads}`), one process at a time"


def write(rows: list[Row], args: argparse.Namespace) -> None:
    lines = [
        *header(
            "PPO seed populations beside SB3, sbx and PureJaxRL-style JAX",
            software_line(PACKAGES),
            args.conditions,
            python=True,
        ),
        f"- PPO on {ENV_ID}, `configs/ppo/CartPole-v1.yaml`'s hyperparameters, {args.steps} "
        "env steps per seed (whole rollouts of 256: "
        f"{-(-args.steps // 256) * 256}), final evaluation of each seed's greedy policy over "
        f"{EVAL_EPISODES} episodes. Wall: the whole process. Train: training plus the final "
        "evaluation, in-process (start-up, imports and JIT compilation excluded; sbx's "
        "compilation is its first iteration's excess over the median one). Train CPU: the "
        "process's CPU time over the same span (rlnorm: its learner's `train()`, the last "
        "checkpoint included), which other processes on the core do not inflate as they do "
        "wall time. The ratio is a row's steps per train CPU "
        "second over `rlnorm (none), --seed 0`'s."
        + (
            f" Each time is the median over {args.repeats} rounds run one after another, each "
            "round every contender once (final returns: the first round's; the seeds repeat)."
            if args.repeats > 1
            else ""
        ),
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---|---|---|",
        *(table_line(row, rows) for row in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
