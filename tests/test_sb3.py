"""The stable-baselines3 adapter (``--agent sb3:<Algo>``): SB3's algorithms trained through
rlnorm's CLI with rlnorm's norm in their networks, acting only in eval mode, target networks
that get every buffer, checkpoints that ``rlnorm eval`` and a resumed run reproduce exactly.

Runs are a few hundred env steps with small networks, in-process through ``rlnorm.cli.main``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import safetensors.torch
import torch
from torch import nn

pytest.importorskip(
    "stable_baselines3", reason="stable-baselines3 is not installed (pip install stable-baselines3)"
)

from rlnorm import agents, catalog, checkpoint, cli
from rlnorm import norm as norms
from rlnorm.agents import sb3
from rlnorm.agents.ppo import gae
from rlnorm.config import build_config
from rlnorm.errors import ConfigError, UnknownNameError
from rlnorm.learner import Learner
from rlnorm.rollout import Rollout, uniform_actions
from rlnorm.safety import acting, training

CONTRIB = pytest.mark.skipif(
    "sb3:CrossQ" not in catalog.sb3_available(), reason="sb3-contrib is not installed"
)
CARTPOLE = gym.spaces.Box(-1.0, 1.0, (4,))
PENDULUM_OBS = gym.spaces.Box(-8.0, 8.0, (3,))
PENDULUM_ACT = gym.spaces.Box(-2.0, 2.0, (1,))

COMMON = (
    "--quiet --set train.num_envs=2 --set train.eval_every=0 --set train.final_eval_episodes=4 "
    "--set train.eval_num_envs=2 --set train.checkpoint_every=0"
)
SMALL_OFF_POLICY = (
    "--set agent.buffer_size=4096 --set agent.batch_size=32 --set agent.learning_starts=64 "
    "--set agent.net_arch=[32,32]"
)
#: algorithm -> (env, steps, extra CLI arguments): each run takes a second or two.
RUNS: dict[str, tuple[str, int, str]] = {
    "PPO": (
        "CartPole-v1",
        512,
        "--set agent.n_steps=64 --set agent.batch_size=32 --set agent.n_epochs=2",
    ),
    "A2C": ("CartPole-v1", 256, "--set agent.n_steps=8"),
    "DQN": (
        "CartPole-v1",
        400,
        # the shipped config's train_freq=256 would make the whole run one collection
        f"{SMALL_OFF_POLICY} --set agent.train_freq=4 --set agent.gradient_steps=1 "
        "--set agent.target_update_interval=64 --set agent.exploration_fraction=0.5",
    ),
    "SAC": ("Pendulum-v1", 256, f"{SMALL_OFF_POLICY} --set agent.critic_net_arch=[32,32]"),
    "TD3": (
        "Pendulum-v1",
        256,
        f"{SMALL_OFF_POLICY} --set agent.critic_net_arch=[32,32] --set agent.action_noise_std=0.1",
    ),
    "CrossQ": ("Pendulum-v1", 256, f"{SMALL_OFF_POLICY} --set agent.critic_net_arch=[32,32]"),
}
ALGORITHMS = [pytest.param(a, marks=CONTRIB) if a == "CrossQ" else a for a in RUNS]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def train_argv(
    algorithm: str, run_dir: Path, norm: str = "batch", steps: int | None = None
) -> list[str]:
    env, default_steps, extra = RUNS[algorithm]
    return [
        "train", "--agent", f"sb3:{algorithm}", "--env", env, "--norm", norm,
        "--steps", str(steps or default_steps), "--run-dir", str(run_dir),
        *shlex.split(COMMON), *shlex.split(extra),
    ]  # fmt: skip


def norm_layers(module: nn.Module, kind: str) -> list[nn.Module]:
    return [m for m in module.modules() if (k := norms.kind_of(m)) is not None and k.name == kind]


def build(algorithm: str, norm: str = "batch", **config: Any) -> sb3.SB3Agent:
    """An adapter built from spaces alone (no env), small networks."""
    cls = agents.get(f"sb3:{algorithm}")
    continuous = algorithm in ("SAC", "TD3", "CrossQ")
    obs_space = PENDULUM_OBS if continuous else CARTPOLE
    action_space = PENDULUM_ACT if continuous else gym.spaces.Discrete(2)
    return cls(obs_space, action_space, build_config(cls, config), norm)


def random_rollout(agent: sb3.SB3Agent, steps: int, num_envs: int, seed: int = 0) -> Rollout:
    """A rollout of random transitions with episode ends and the autoreset steps after them,
    the agent's acting extras included (as the rollout manager stores them)."""
    g = torch.Generator().manual_seed(seed)
    shape = (steps, num_envs)
    obs = torch.randn((steps + 1, num_envs, *agent.observation_space.shape), generator=g)
    done = torch.rand(shape, generator=g) < 0.15
    terminated = done & (torch.rand(shape, generator=g) < 0.5)
    truncated = done & ~terminated
    valid = torch.ones(shape, dtype=torch.bool)
    valid[1:] = ~done[:-1]
    actions = uniform_actions(agent.action_space, steps * num_envs, torch.device("cpu"))
    extras: dict[str, torch.Tensor] = {}
    if isinstance(agent, sb3.SB3OnPolicy):
        with acting(*agent.acting_modules()):
            out = agent.act(obs.flatten(0, 1))
        extras = {k: v.reshape(steps + 1, num_envs, *v.shape[1:]) for k, v in out.extras.items()}
        actions = extras["sample"][:-1].flatten(0, 1)
    return Rollout(
        obs=obs,
        actions=actions.reshape(steps, num_envs, *actions.shape[1:]),
        rewards=torch.randn(shape, generator=g),
        terminated=terminated,
        truncated=truncated,
        valid=valid,
        extras=extras,
    )


# --------------------------------------------------------------------------- names


def test_sb3_names_resolve_lazily_and_unknown_ones_list_the_valid_ones() -> None:
    assert {f"sb3:{a}" for a in ("PPO", "A2C", "SAC", "TD3", "DQN")} <= set(agents.names())
    assert agents.get("sb3:PPO") is sb3.SB3PPO
    with pytest.raises(UnknownNameError) as e:
        agents.get("sb3:PPOO")
    assert "Did you mean 'sb3:PPO'" in str(e.value) and "sb3:SAC" in str(e.value)
    rc, _, err = run_main(["train", "--agent", "sb3:Foo", "--env", "CartPole-v1"])
    assert rc == 2 and "unknown stable-baselines3 algorithm 'sb3:Foo'" in err


def test_missing_stable_baselines3_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # makes the import fail
    with pytest.raises(sb3.MissingDependencyError, match="pip install stable-baselines3"):
        agents.get("sb3:PPO")


def test_config_is_checked_with_sb3_names() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'n_steps'"):
        build_config(sb3.SB3PPO, {"n_step": 8})
    with pytest.raises(ConfigError, match=r"agent\.gradient_steps"):
        build_config(sb3.SB3SAC, {"gradient_steps": 0})
    with pytest.raises(ConfigError, match=r"agent\.activation_fn"):
        build_config(sb3.SB3DQN, {"activation_fn": "swish"})
    rc, _, err = run_main(["train", "--agent", "sb3:PPO", "--set", "agent.batch_size=1"])
    assert rc == 2 and "batch_size" in err
    # The config's fields reach SB3 under the same names.
    agent = build("PPO", n_epochs=3, clip_range_vf=0.0, learning_rate_schedule="linear")
    assert agent.model.n_epochs == 3 and agent.model.clip_range_vf is None
    assert agent.model.lr_schedule(0.25) == pytest.approx(0.25 * 3e-4)


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    # PPO/A2C: 2 hidden layers in each of the policy and value nets. DQN: 2 in the Q-net and
    # in its target. SAC: 2 in the actor, 2 in each of 2 critics and 2 target critics. TD3:
    # the same with a target actor. CrossQ: no targets.
    [
        ("PPO", 4),
        ("A2C", 4),
        ("DQN", 4),
        ("SAC", 10),
        ("TD3", 12),
        pytest.param("CrossQ", 6, marks=CONTRIB),
    ],
)
def test_the_norm_is_injected_after_each_hidden_linear(algorithm: str, expected: int) -> None:
    arch = {"net_arch": (16, 16)} | ({} if algorithm == "DQN" else {"critic_net_arch": (16, 16)})
    agent = build(algorithm, **arch)
    policy = agent.model.policy
    assert len(norm_layers(policy, "batch")) == expected
    for net in policy.modules():  # Linear -> BatchNorm -> activation, never after an output
        if isinstance(net, nn.Sequential):
            for i, layer in enumerate(net):
                if norms.kind_of(layer) is not None:
                    assert isinstance(net[i - 1], nn.Linear) and i + 1 < len(net)
    if algorithm == "CrossQ":  # its own Batch Renorm is off: the norm is rlnorm's
        from sb3_contrib.common.torch_layers import BatchRenorm1d

        assert not any(isinstance(m, BatchRenorm1d) for m in policy.modules())

    # SB3 built its optimizers after the injection: they cover every trainable parameter
    # outside the target networks, norm layers' affine parameters included.
    targets = {id(p) for t in agent._targets for p in t.parameters()}
    trainable = {id(p) for m in agent.modules().values() for p in m.parameters()} - targets
    optimized = {
        id(p) for opt in agent.optimizers().values() for g in opt.param_groups for p in g["params"]
    }
    assert optimized == trainable


def test_norm_none_is_sb3s_own_network() -> None:
    import stable_baselines3

    ours = build("SAC", norm="none", net_arch=(16, 16), critic_net_arch=(16, 16))
    plain = stable_baselines3.SAC(
        "MlpPolicy", gym.make("Pendulum-v1"), policy_kwargs={"net_arch": [16, 16]}
    )
    assert ours.model.policy.state_dict().keys() == plain.policy.state_dict().keys()
    assert not any(norms.kind_of(m) is not None for m in ours.model.policy.modules())


@pytest.mark.parametrize("norm", norms.names())
def test_every_norm_kind_builds_acts_and_updates(norm: str) -> None:
    for algorithm in ("PPO", "SAC"):
        agent = build(algorithm, norm, net_arch=(8, 8), critic_net_arch=(8, 8), batch_size=16)
        rollout = random_rollout(agent, 16, 2)
        if isinstance(agent, sb3.SB3OffPolicy):
            agent.replay.add(rollout)
            rollout = agent.replay
        with training(*agent.modules().values()):
            metrics = agent.update(rollout, progress=0.5)
        assert metrics and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


# --------------------------------------------------------------------------- updates


@pytest.mark.parametrize("algorithm", ["SAC", "TD3"])
def test_targets_get_every_buffer_and_normalize_in_eval_mode(algorithm: str) -> None:
    # TD3 updates its targets every policy_delay=2 gradient steps: the second one here.
    agent = build(
        algorithm, net_arch=(16, 16), critic_net_arch=(16, 16), batch_size=16, gradient_steps=2
    )
    agent.replay.add(random_rollout(agent, 32, 2))
    modes: list[bool] = []
    for target in agent._targets:
        for layer in norm_layers(target, "batch"):
            layer.register_forward_pre_hook(lambda m, _: modes.append(m.training))
    with training(*agent.modules().values()):
        agent.update(agent.replay, progress=0.1)

    assert modes and not any(modes)  # the TD targets came from running statistics
    pairs = [(online, target) for _, online, target in agent._target_pairs()]
    assert len(pairs) == (2 if algorithm == "TD3" else 1)
    for online, target in pairs:
        named = list(online.named_buffers())
        # SB3 copies the buffers named running_* only; these are the others.
        others = [name for name, _ in named if "running_" not in name]
        assert any(name.endswith("num_batches_tracked") for name in others)
        for (name, source), copy in zip(named, target.buffers(), strict=True):
            assert torch.equal(source, copy), name
        tracked = [b for name, b in named if name.endswith("num_batches_tracked")]
        assert all(int(b) > 0 for b in tracked)


def test_on_policy_buffer_bootstraps_like_rlnorms_gae() -> None:
    """Truncated episodes and the rollout's end bootstrap from the next value, terminated
    episodes do not, and no advantage runs across two sub-envs or episodes."""
    agent = build("PPO", gae_lambda=0.9, gamma=0.97)
    rollout = random_rollout(agent, 24, 3, seed=1)
    assert rollout.truncated.any() and rollout.terminated.any() and not rollout.valid.all()
    buffer = agent._rollout_buffer(rollout)
    values = rollout.extras["value"]
    expected = gae(rollout.rewards, values, rollout.terminated, rollout.truncated, 0.97, 0.9)
    keep = rollout.valid.T.reshape(-1)
    expected = expected.T.reshape(-1)[keep]
    torch.testing.assert_close(torch.as_tensor(buffer.advantages).flatten(), expected.float())


@pytest.mark.parametrize("norm", ["batch", "batch_renorm"])
def test_frozen_norm_update_makes_the_first_ratio_one(norm: str) -> None:
    """With a learning rate too small to move the weights, every ratio SB3's PPO computes
    reflects only the gap between the acting (eval) and the updated network: none with
    ``norm_update=frozen``, spurious clipping with ``batch``. The frozen update then
    refreshes the running statistics with one train-mode pass over the rollout. (No
    orthogonal init: its 0.01-gain action head makes any policy nearly uniform at first,
    which hides the gap.)"""
    clip_fraction, kl = {}, {}
    for update in ("frozen", "batch"):
        torch.manual_seed(0)
        agent = build(
            "PPO", norm, norm_update=update, learning_rate=1e-12, n_epochs=1, batch_size=16,
            clip_range=0.05, net_arch=(16, 16), critic_net_arch=(16, 16), ortho_init=False,
        )  # fmt: skip
        rollout = random_rollout(agent, 32, 2)
        rollout.obs = 3.0 * rollout.obs + 1.0  # far from the initial statistics (0, 1)
        with acting(*agent.acting_modules()):  # acting extras for the moved observations
            out = agent.act(rollout.obs.flatten(0, 1))
        rollout.extras = {k: v.reshape(33, 2, *v.shape[1:]) for k, v in out.extras.items()}
        before = {k: b.clone() for k, b in agent.model.policy.named_buffers()}
        with training(*agent.modules().values()):
            metrics = agent.update(rollout, progress=0.0)
        clip_fraction[update], kl[update] = metrics["loss/clip_fraction"], metrics["loss/approx_kl"]
        moved = [k for k, b in agent.model.policy.named_buffers() if not torch.equal(b, before[k])]
        assert any("running_mean" in k for k in moved)
    assert clip_fraction["frozen"] == 0.0 and abs(kl["frozen"]) < 1e-6
    assert clip_fraction["batch"] > 0.1


def test_norm_update_and_statistics_are_checked() -> None:
    with pytest.raises(ConfigError, match="norm_update"):
        build("PPO", norm_update="frozn")
    agent = build("A2C", norm_statistics="ema")
    assert all(m.momentum == 0.1 for m in norm_layers(agent.model.policy, "batch"))
    agent = build("A2C")
    assert all(m.momentum is None for m in norm_layers(agent.model.policy, "batch"))


def test_batch_norm_ppo_never_gets_a_minibatch_of_one() -> None:
    agent = build("PPO", batch_size=8, n_epochs=1)
    rollout = random_rollout(agent, 17, 1)
    rollout.terminated[:], rollout.truncated[:], rollout.valid[:] = False, False, True
    with training(*agent.modules().values()):  # 17 samples: 2 minibatches of 8, not 3
        metrics = agent.update(rollout, progress=0.0)
    assert agent.model.rollout_buffer.buffer_size == 16
    assert metrics["train/n_updates"] == 1


# --------------------------------------------------------------------------- through the CLI


def first_update_findings(algorithm: str) -> contextlib.AbstractContextManager[Any]:
    """The learner's audit after the first update, as expected for ``algorithm``: SB3's
    target networks (DQN, TD3) and delayed actors (TD3, CrossQ) have not yet run a
    train-mode pass then, so their statistics are reported as never updated."""
    if algorithm in ("DQN", "TD3", "CrossQ"):
        return pytest.warns(RuntimeWarning, match="running statistics never updated")
    return contextlib.nullcontext()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_train_acts_in_eval_mode_and_eval_reproduces_the_checkpoint(
    algorithm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = agents.get(f"sb3:{algorithm}")
    seen: list[bool] = []
    real_act = cls.act

    def spy(self: sb3.SB3Agent, obs: torch.Tensor, deterministic: bool = False) -> Any:
        seen.extend(m.training for m in self.model.policy.modules())
        return real_act(self, obs, deterministic)

    monkeypatch.setattr(cls, "act", spy)
    run_dir = tmp_path / "run"
    with first_update_findings(algorithm):
        rc, out, err = run_main(train_argv(algorithm, run_dir))
    assert rc == 0, err
    assert seen and not any(seen)  # every act, training and evaluation, in eval mode

    last = run_dir / "checkpoints" / "last"
    meta = checkpoint.read_meta(last)
    assert meta.agent == f"sb3:{algorithm}" and meta.norm == "batch"
    weights = safetensors.torch.load_file(last / "weights.safetensors")
    assert any(k.startswith("policy.") and "running_mean" in k for k in weights)
    final = json.loads((run_dir / "summary.json").read_text())["final_eval"]

    rc, out, _ = run_main(["eval", str(last), "--json"])  # a fresh load from disk
    assert rc == 0
    result = json.loads(out)
    assert (result["mean_return"], result["std_return"]) == (final["mean"], final["std"])
    assert result["episodes"] == final["episodes"] == 4

    tags = [p.name for p in (run_dir / "tb").iterdir()]
    assert tags and (run_dir / "eval.jsonl").exists()


class Interrupt(Exception):
    """Stands in for a crash between two updates."""


@pytest.mark.parametrize("algorithm", ["PPO", "DQN", "SAC"])
def test_a_resumed_run_equals_an_uninterrupted_one(
    algorithm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SB3's counters, DQN's exploration and target schedule, SAC's entropy coefficient and
    PPO's minibatch order all continue exactly from an rlnorm checkpoint."""
    steps = RUNS[algorithm][1]
    every = ["--set", f"train.checkpoint_every={steps // 2}"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    with first_update_findings(algorithm):
        assert run_main([*train_argv(algorithm, whole), *every])[0] == 0

    real_step = Learner._step

    def step(self: Learner) -> dict[str, float]:
        if self.env_steps > steps // 2 + 64:
            raise Interrupt
        return real_step(self)

    with monkeypatch.context() as m:
        m.setattr(Learner, "_step", step)
        with pytest.raises(Interrupt), first_update_findings(algorithm):
            cli.main([*train_argv(algorithm, broken), *every])
    assert run_main(["train", "--resume", str(broken), "--quiet"])[0] == 0

    a = safetensors.torch.load_file(whole / "checkpoints" / "last" / "weights.safetensors")
    b = safetensors.torch.load_file(broken / "checkpoints" / "last" / "weights.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert int(a["algorithm.n_updates"]) > 0
