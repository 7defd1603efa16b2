"""SAC, TD3 and CrossQ: short CLI runs that checkpoint, evaluate and resume exactly; target
networks that receive every normalization buffer; the critic's joint pass over (s, a) and
(s', a'); CrossQ's target-free critic whose statistics the actor loss leaves alone; final
observations of truncated episodes in the replay buffer.

Every run is a few hundred Pendulum-v1 steps with tiny networks: seconds, not learning.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn

import rlnorm
from rlnorm import agents, checkpoint, cli, envs, metrics
from rlnorm import norm as norms
from rlnorm.agent import Agent
from rlnorm.config import build_config
from rlnorm.learner import Learner
from rlnorm.nets import StreamNorm
from rlnorm.replay import ReplayBuffer
from rlnorm.rollout import RolloutManager
from rlnorm.safety import frozen_statistics, training
from rlnorm.targets import TargetNetwork

TINY = {
    "sac": ["--set", "agent.hidden=[16,16]"],
    "td3": ["--set", "agent.hidden=[16,16]", "--set", "agent.learning_starts=100"],
    "crossq": ["--set", "agent.actor_hidden=[16,16]", "--set", "agent.critic_hidden=[16,16]"],
}
RUN = [
    "--env", "Pendulum-v1", "--quiet", "--set", "train.num_envs=4",
    "--set", "train.eval_every=0", "--set", "train.final_eval_episodes=2",
    "--set", "train.eval_num_envs=2", "--set", "agent.batch_size=32",
]  # fmt: skip


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def train(run_dir: Path, agent: str, norm: str, steps: int, *extra: str) -> None:
    argv = ["train", "--agent", agent, "--norm", norm, "--steps", str(steps), "--run-dir"]
    rc, _, err = run_main([*argv, str(run_dir), *RUN, *TINY[agent], *extra])
    assert rc == 0, err


def make_agent(name: str, norm: str, **config: Any) -> Agent:
    env = envs.make("Pendulum-v1", num_envs=1)
    cls = agents.get(name)
    cfg = build_config(cls, {"batch_size": 64, "gradient_steps": 1, **config})
    return cls(env.single_observation_space, env.single_action_space, cfg, norm)


def fill(agent: Agent, steps: int = 300, seed: int = 0) -> None:
    """Random-action transitions into the agent's replay, as the learner's warm-up does."""
    env = envs.make("Pendulum-v1", num_envs=4)
    manager = RolloutManager(agent, env)
    manager.reset(seed=seed)
    agent.replay.add(manager.collect(steps // 4, random_actions=True))


def buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: b.clone() for k, b in module.named_buffers()}


def first_norm(critic: nn.Module, stream: int = 0) -> nn.Module:
    """The first normalization layer of the critic's first Q-network."""
    layer = critic.nets[0][1]
    return layer[stream] if isinstance(layer, StreamNorm) else layer


# --------------------------------------------------------------------------- CLI runs


def renorm_warmup_findings(agent: str, norm: str) -> contextlib.AbstractContextManager[Any]:
    """The audit after the first update, as expected: a short run of an agent without a
    configured warm-up (SAC, TD3) ends inside Batch Renorm's default 1,000-pass warm-up."""
    if norm == "batch_renorm" and agent != "crossq":
        return pytest.warns(RuntimeWarning, match="stays in its warm-up for the whole run")
    return contextlib.nullcontext()


@pytest.fixture(scope="module")
def short_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, str], tuple[Path, list[str]]]:
    """A 300-step CLI run of ``agent`` with ``norm``: its run directory and the messages of
    the warnings it raised. Each run trains once per module (two tests read SAC's Batch
    Renorm run); the run directories are only read."""
    runs: dict[tuple[str, str], tuple[Path, list[str]]] = {}

    def run(agent: str, norm: str) -> tuple[Path, list[str]]:
        if (agent, norm) not in runs:
            run_dir = tmp_path_factory.mktemp(f"{agent}-{norm}")
            with renorm_warmup_findings(agent, norm) as caught:
                train(run_dir, agent, norm, 300)
            runs[agent, norm] = (run_dir, [str(w.message) for w in caught or []])
        return runs[agent, norm]

    return run


@pytest.mark.parametrize(
    ("agent", "norm"),
    [
        ("sac", "none"),
        ("sac", "batch"),
        ("sac", "batch_renorm"),
        ("sac", "weight"),
        ("td3", "layer"),
        ("td3", "batch"),
        ("td3", "rms"),
        ("crossq", "batch_renorm"),
        ("crossq", "cosine"),
    ],
)
def test_short_run_checkpoints_and_eval_reproduces(
    agent: str, norm: str, short_run: Callable[[str, str], tuple[Path, list[str]]]
) -> None:
    run_dir, _ = short_run(agent, norm)
    recorded = json.loads((run_dir / "eval.jsonl").read_text().splitlines()[-1])
    rc, out, err = run_main(["eval", str(run_dir / "checkpoints" / "last"), "--json"])
    assert rc == 0, err
    assert json.loads(out)["mean_return"] == recorded["mean"]

    # The checkpoint holds every module (targets, temperature, step counter included) and
    # loads back bit-exact, in eval mode.
    loaded = rlnorm.load(run_dir / "checkpoints" / "last")
    saved = safetensors.torch.load_file(run_dir / "checkpoints" / "last" / "weights.safetensors")
    for name, module in loaded.modules().items():
        assert not any(m.training for m in module.modules()), name
        for key, value in module.state_dict().items():
            assert torch.equal(value, saved[f"{name}.{key}"]), f"{name}.{key}"
    counters = checkpoint.read_meta(run_dir / "checkpoints" / "last").counters
    # 4 sub-envs: the first update comes at 100 env steps, then one per 4 steps.
    assert counters == {"env_steps": 300, "updates": 51}
    assert int(loaded.counter.steps) == 51 * 4  # update-to-data ratio 1


def test_ddpg_config_builds_the_papers_batchnorm_placement(tmp_path: Path) -> None:
    config = Path(__file__).parents[1] / "configs" / "td3" / "ddpg-Pendulum-v1.yaml"
    train(tmp_path, "td3", "batch", 200, "--config", str(config))
    agent = rlnorm.load(tmp_path / "checkpoints" / "last")
    assert agent.config.n_critics == 1 and agent.config.policy_delay == 1
    assert agent.config.target_noise == 0.0
    norm_type = nn.modules.batchnorm._BatchNorm
    # Actor: the state input and every hidden layer.
    assert isinstance(agent.actor.input, norm_type)
    assert sum(isinstance(m, norm_type) for m in agent.actor.body.modules()) == 2
    # Critic: state input and the layer before the action joins; none after it.
    critic = agent.critic.nets[0]
    assert sum(isinstance(m, norm_type) for m in critic.state.modules()) == 2
    assert not any(isinstance(m, norm_type) for m in critic.head.modules())
    assert critic.head[0].in_features == 16 + 1  # first hidden width + the action


def interrupt_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    real_step = Learner._step
    count = {"n": 0}

    def step(self: Learner) -> dict[str, float]:
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Learner, "_step", step)


def test_interrupted_sac_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batch Renorm: its clip schedule follows num_batches_tracked, which must resume too.
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    extra = ["--set", "train.checkpoint_every=160"]
    with renorm_warmup_findings("sac", "batch_renorm"):
        train(whole, "sac", "batch_renorm", 240, *extra)
    with monkeypatch.context() as m:
        interrupt_after(m, 50)  # 4 env steps a learner step: dies at 200, after 160's checkpoint
        with pytest.raises(KeyboardInterrupt), renorm_warmup_findings("sac", "batch_renorm"):
            train(broken, "sac", "batch_renorm", 240, *extra)
    assert checkpoint.read_meta(broken / "checkpoints" / "last").counters["env_steps"] == 160
    rc, _, err = run_main(["train", "--resume", str(broken), "--quiet"])
    assert rc == 0, err
    a, b = (
        safetensors.torch.load_file(d / "checkpoints" / "last" / "weights.safetensors")
        for d in (whole, broken)
    )
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_audit_projects_batch_renorm_passes_from_updates_and_skips_targets(
    short_run: Callable[[str, str], tuple[Path, list[str]]],
) -> None:
    # Updates start only after learning_starts and each makes several gradient steps: the
    # audit after the first update must project the run's train-mode passes from the
    # planned updates, not from env steps, and report the online critic, not its target.
    run_dir, warned = short_run("sac", "batch_renorm")  # raised the warm-up warning
    findings = [message for message in warned if "Batch Renorm" in message]
    assert findings and not any(m.startswith("audit: critic_target") for m in findings)
    projected = {
        int(m.split("run makes about ")[1].split(";")[0].replace(",", "")) for m in findings
    }
    weights = safetensors.torch.load_file(run_dir / "checkpoints" / "last" / "weights.safetensors")
    counts = {int(v) for k, v in weights.items() if k.startswith("critic.") and "tracked" in k}
    assert len(counts) == 1
    passes = counts.pop()
    assert all(abs(p - passes) <= 0.05 * passes for p in projected), (projected, passes)


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize("norm", ["batch", "batch_renorm"])
@pytest.mark.parametrize("name", ["sac", "td3"])
def test_targets_receive_every_buffer_and_polyak_parameters(name: str, norm: str) -> None:
    agent = make_agent(name, norm, policy_delay=1) if name == "td3" else make_agent(name, norm)
    fill(agent)
    pairs = [(agent.critic, agent.critic_target)]
    if name == "td3":
        pairs.append((agent.actor, agent.actor_target))
    before = [[p.clone() for p in target.parameters()] for _, target in pairs]
    with training(*agent.modules().values()):
        agent.update(agent.replay, 0.0)

    tau = agent.config.tau
    for (online, target), old in zip(pairs, before, strict=True):
        online_buffers = dict(online.named_buffers())
        target_buffers = dict(target.net.named_buffers())
        # every buffer: running mean/var, num_batches_tracked, the last batch's statistics
        assert online_buffers.keys() == target_buffers.keys()
        assert {"running_mean", "running_var", "num_batches_tracked"} <= {
            k.rsplit(".", 1)[-1] for k in online_buffers
        }
        for key, value in online_buffers.items():
            assert torch.equal(target_buffers[key], value), key
        tracked = [v for k, v in online_buffers.items() if k.endswith("num_batches_tracked")]
        assert all(int(v) >= 1 for v in tracked)
        for p_old, p_target, p_online in zip(
            old, target.parameters(), online.parameters(), strict=True
        ):
            assert torch.equal(p_target, torch.lerp(p_old, p_online, tau))  # torch.lerp, to the bit
            assert not p_target.requires_grad


def test_target_network_reads_with_running_statistics_in_any_mode() -> None:
    agent = make_agent("sac", "batch", tau=1.0)  # tau 1: the target is the online critic
    fill(agent)
    with training(*agent.modules().values()):
        agent.update(agent.replay, 0.0)
        x = torch.randn(8, 4)
        assert agent.critic_target.net.training  # the learner's train mode ...
        with frozen_statistics(agent.critic):
            expected = agent.critic(x)
        # ... yet the target normalizes with its (copied) running statistics, without grad
        assert torch.equal(agent.critic_target(x), expected.detach())
        assert not agent.critic_target(x).requires_grad
        assert isinstance(agent.critic_target, TargetNetwork)


# --------------------------------------------------------------------------- joint pass


def merged_statistics(layer_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm's running statistics after one train-mode pass from (0, 1), momentum 0.1."""
    var, mean = torch.var_mean(layer_input, 0)
    return 0.1 * mean, 0.9 + 0.1 * var


@pytest.mark.parametrize("streams", ["joint", "separate", "per_stream"])
def test_td3_critic_statistics_follow_the_configured_streams(streams: str) -> None:
    # No target smoothing: the next action is the target actor's, so the test can
    # recompute both streams exactly.
    agent = make_agent(
        "td3", "batch", target_noise=0.0, critic_streams=streams, bn_placement="hidden"
    )
    fill(agent)
    torch.manual_seed(1)
    batch = agent.replay.sample(agent.config.batch_size)
    obs, next_obs = batch.obs, batch.next_obs
    current = torch.cat([obs, agent.scale.from_env(batch.actions)], -1)
    nxt = torch.cat([next_obs, agent.actor_target(next_obs)], -1)
    with torch.no_grad():
        first_linear = agent.critic.nets[0][0]
        h, h_next = first_linear(current), first_linear(nxt)

    torch.manual_seed(1)  # the update draws the same minibatch
    with training(*agent.modules().values()):
        agent.update(agent.replay, 0.0)

    if streams == "joint":
        expected = {0: merged_statistics(torch.cat([h, h_next]))}
    elif streams == "separate":
        expected = {0: merged_statistics(h)}
    else:
        expected = {0: merged_statistics(h), 1: merged_statistics(h_next)}
    for stream, (mean, var) in expected.items():
        layer = first_norm(agent.critic, stream)
        torch.testing.assert_close(layer.running_mean, mean)
        torch.testing.assert_close(layer.running_var, var)
        assert int(layer.num_batches_tracked) == 1  # the actor loss did not move them
        # ... and the target critic reads (s', a') with exactly these statistics
        target_layer = first_norm(agent.critic_target.net, stream)
        assert torch.equal(target_layer.running_mean, layer.running_mean)


@pytest.mark.parametrize("mode", ["frozen", "batch"])
def test_td3_actor_update_optimizes_the_acting_function_when_frozen(mode: str) -> None:
    """``actor_norm_update=frozen``: the actor loss runs the actor's BatchNorm on its running
    statistics (the policy that acts), then one train-mode pass without gradient moves them
    by one momentum step towards the batch. ``batch``: the loss itself runs on batch
    statistics, which that same pass moves."""
    agent = make_agent(
        "td3", "batch", policy_delay=1, actor_norm_update=mode, bn_placement="hidden"
    )
    fill(agent)
    layers = [m for m in agent.actor.modules() if isinstance(m, nn.BatchNorm1d)]
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
    first_linear = copy.deepcopy(agent.actor.body[0])  # as the actor loss's pass sees it
    seen: list[tuple[bool, bool]] = []  # (layer in train mode, gradient recorded) per pass
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append((m.training, o.requires_grad)))
        for m in layers[:1]
    ]
    torch.manual_seed(1)
    batch = agent.replay.sample(agent.config.batch_size)
    torch.manual_seed(1)  # the update draws the same minibatch
    with training(*agent.modules().values()):
        agent.update(agent.replay, 0.0)
    for hook in hooks:
        hook.remove()
    frozen = mode == "frozen"
    assert [training for training, grad in seen if grad] == [not frozen]  # the loss's pass
    assert [training for training, grad in seen if not grad] == ([True] if frozen else [])
    # The running statistics moved once, from their initial (0, 1) towards this batch: as
    # the loss's pass saw it (batch), or through the updated weights (frozen's refresh).
    assert torch.equal(before[0][0], torch.zeros_like(before[0][0]))
    with torch.no_grad():
        mean, var = merged_statistics((agent.actor.body[0] if frozen else first_linear)(batch.obs))
    torch.testing.assert_close(layers[0].running_mean, mean)
    torch.testing.assert_close(layers[0].running_var, var)
    assert int(layers[0].num_batches_tracked) == 1


def test_joint_is_separate_for_batch_independent_norms() -> None:
    assert make_agent("sac", "layer").critic_streams == "separate"
    assert make_agent("sac", "batch").critic_streams == "joint"


# --------------------------------------------------------------------------- CrossQ


def test_crossq_has_no_target_and_only_its_joint_pass_moves_critic_statistics() -> None:
    agent = make_agent("crossq", "batch_renorm", actor_hidden=(16, 16), critic_hidden=(16, 16))
    assert set(agent.modules()) == {"actor", "critic", "temperature", "counter"}
    assert not any(
        isinstance(m, TargetNetwork) for mod in agent.modules().values() for m in mod.modules()
    )
    # sbx's Batch Renorm warm-up (plain BatchNorm for 100k passes), not the layer's default
    warmups = {m.warmup_steps for m in agent.critic.modules() if hasattr(m, "warmup_steps")}
    assert warmups == {agent.config.renorm_warmup_steps} == {100_000}
    fill(agent)
    torch.manual_seed(2)
    batch = agent.replay.sample(agent.config.batch_size)
    with torch.no_grad(), frozen_statistics(agent.actor):
        next_actions, _ = agent.actor.sample(batch.next_obs)
    # sbx's layout: the first norm layer standardizes the raw (s, a) of both streams
    h = torch.cat([batch.obs, agent.scale.from_env(batch.actions)], -1)
    h_next = torch.cat([batch.next_obs, next_actions], -1)
    actor_before = [p.clone() for p in agent.actor.parameters()]

    torch.manual_seed(2)
    with training(*agent.modules().values()):
        agent.update(agent.replay, 0.0)  # gradient step 0: critic, then actor (delay 3)

    # The actor did step, through the critic; the critic's statistics are those of the one
    # joint pass over the merged batch (momentum 0.01), untouched by the actor loss's pass.
    assert any(
        not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters(), strict=True)
    )
    layer = agent.critic.nets[0][0]
    var, mean = torch.var_mean(torch.cat([h, h_next]), 0)
    torch.testing.assert_close(layer.running_mean, 0.01 * mean)
    torch.testing.assert_close(layer.running_var, 0.99 + 0.01 * var)
    assert int(layer.num_batches_tracked) == 1


POST = ["Linear", "ReLU", "norm"]  # sbx: a norm after each hidden layer's activation
PRE = ["Linear", "norm", "ReLU"]  # rlnorm's mlp default


@pytest.mark.parametrize(
    ("placement", "norm", "expected"),
    [
        (None, "batch_renorm", ["norm", *POST, *POST, "Linear"]),  # the default
        ("crossq", "layer", [*POST, *POST, "Linear"]),
        ("hidden", "batch_renorm", [*PRE, *PRE, "Linear"]),
    ],
)
@pytest.mark.parametrize("name", ["crossq", "td3"])
def test_crossq_and_td3_place_their_norms_as_sbx_does_by_default(
    name: str, placement: str | None, norm: str, expected: list[str]
) -> None:
    """sbx's layout: a batch-dependent norm on the raw input, then Linear -> ReLU -> norm;
    a per-sample norm is not put on the raw input; ``hidden`` is rlnorm's mlp default."""
    sizes = (
        {"hidden": (8, 8)} if name == "td3" else {"actor_hidden": (8, 8), "critic_hidden": (8, 8)}
    )
    chosen = {} if placement is None else {"bn_placement": placement}
    agent = make_agent(name, norm, **sizes, **chosen)
    for net in (agent.actor.body, agent.critic.nets[0], agent.critic.nets[1]):
        names = ["norm" if norms.kind_of(m) else type(m).__name__ for m in net]
        assert names == expected


def test_crossq_actor_loss_leaves_critic_buffers_unchanged() -> None:
    agent = make_agent("crossq", "batch", actor_hidden=(16, 16), critic_hidden=(16, 16))
    fill(agent)
    snapshots: list[dict[str, torch.Tensor]] = []
    agent.critic.register_forward_hook(lambda m, args, out: snapshots.append(buffers(m)))
    with training(*agent.modules().values()):
        before = buffers(agent.critic)
        agent.update(agent.replay, 0.0)
    # Two critic calls: the joint pass (moves the statistics), the actor loss (must not),
    # then the diagnostics (which restore every buffer).
    joint_pass, actor_loss = snapshots[0], snapshots[1]
    assert any(not torch.equal(before[k], joint_pass[k]) for k in before)
    for key, value in buffers(agent.critic).items():
        assert torch.equal(actor_loss[key], joint_pass[key]), key
        assert torch.equal(value, joint_pass[key]), key


@pytest.mark.parametrize("name", ["sac", "td3", "crossq"])
def test_off_policy_agents_log_the_critic_gap_and_drift_under_their_own_names(
    name: str,
) -> None:
    """One family of names (docs/metrics.md): the critic's own drift never takes the name of
    the learner's all-layer drift, which would overwrite it on measured updates."""
    hidden = {"crossq": {"actor_hidden": (16, 16), "critic_hidden": (16, 16)}}
    agent = make_agent(name, "batch", diagnostics_every=1, **hidden.get(name, {"hidden": (16, 16)}))
    fill(agent)
    with training(*agent.modules().values()):
        logged = agent.update(agent.replay, 0.0)
    norm_keys = {k for k in logged if k.startswith("norm/")}
    assert norm_keys == {
        metrics.GAP_CRITIC,
        metrics.DRIFT_CRITIC_MEAN,
        metrics.DRIFT_CRITIC_LOG_VAR,
    }
    assert logged[metrics.GAP_CRITIC] > 0


# --------------------------------------------------------------------------- replay


class RecordingEnv:
    """Wraps an env, keeping every observation ``step`` returns and its truncation flag."""

    def __init__(self, env: Any) -> None:
        self.env, self.steps = env, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def step(self, actions: torch.Tensor) -> Any:
        obs, reward, term, trunc, info = self.env.step(actions)
        self.steps.append((obs.clone(), trunc.clone()))
        return obs, reward, term, trunc, info


def test_replay_keeps_the_final_observation_of_a_truncated_episode() -> None:
    agent = make_agent("sac", "none")
    env = RecordingEnv(envs.make("Pendulum-v1", num_envs=1))
    manager = RolloutManager(agent, env)
    manager.reset(seed=0)
    for _ in range(5):  # 250 steps in rollouts of 50: the episode ends at step 200
        agent.replay.add(manager.collect(50, random_actions=True))
    assert isinstance(agent.replay, ReplayBuffer)

    final_obs, truncated = env.steps[199]
    assert bool(truncated[0])  # Pendulum's 200-step time limit
    reset_obs, _ = env.steps[200]  # next-step autoreset: the step that starts episode 2
    stored = agent.replay.storage
    assert torch.equal(stored["next_obs"][199], final_obs[0])
    assert not bool(stored["terminated"][199])  # truncation bootstraps
    # The autoreset step is no transition: the next stored one starts from the reset state.
    assert len(agent.replay) == 249
    assert torch.equal(stored["obs"][200], reset_obs[0])
    assert not torch.equal(stored["next_obs"][199], stored["obs"][200])
