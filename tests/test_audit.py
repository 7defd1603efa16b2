"""rlnorm.audit: each unsafe situation built on purpose yields its finding; clean nets none."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import rlnorm
from rlnorm import agents, envs
from rlnorm.audit import Finding, audit, audit_checkpoint, format_findings
from rlnorm.config import build_config
from rlnorm.layers import BatchRenorm1d
from rlnorm.nets import joint_forward, mlp
from rlnorm.rollout import RolloutManager
from rlnorm.streams import StreamWatch


def trained(net: nn.Module, passes: int = 20, **kwargs: int) -> nn.Module:
    """``net`` after train-mode passes over one distribution, left in eval mode."""
    gen = torch.Generator().manual_seed(0)
    with rlnorm.training(net), torch.no_grad():
        for _ in range(passes):
            net(torch.randn(64, net[0].in_features, generator=gen), **kwargs)
    return net.eval()


def only(findings: list[Finding], severity: str, path: str, saying: str = "") -> Finding:
    """The one finding of ``severity`` at ``path`` whose message says ``saying``, checked to
    say what to do."""
    found = [
        f for f in findings if f.severity == severity and f.path == path and saying in f.message
    ]
    assert len(found) == 1, findings
    assert found[0].message and found[0].fix
    return found[0]


def problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity != "info"]


@pytest.mark.parametrize("kind", ["none", "layer", "rms", "weight", "cosine"])
def test_nets_without_batch_statistics_are_clean_in_either_mode(kind: str) -> None:
    net = mlp(4, 2, (8, 8), norm=kind)
    assert audit({"policy": net}) == []
    assert audit({"policy": net.eval()}) == []


@pytest.mark.parametrize("kind", ["batch", "batch_renorm"])
def test_updated_eval_mode_batchnorm_net_has_only_its_batch_dependence_noted(kind: str) -> None:
    net = trained(mlp(4, 2, (8, 8), norm=kind), passes=1100)  # past Batch Renorm's warm-up
    findings = audit({"policy": net})
    assert problems(findings) == []
    assert [f.path for f in findings] == ["policy.1", "policy.4"]
    assert "batch-dependent" in only(findings, "info", "policy.1").message


def test_train_mode_at_rest_is_a_warning_on_the_module() -> None:
    net = trained(mlp(4, 2, (8, 8), norm="batch")).train()
    finding = only(audit({"policy": net}), "warning", "policy")
    assert (
        "2 mode-dependent norm layer(s) left in train mode (policy.1, policy.4)" in finding.message
    )
    assert "eval" in finding.fix
    net.eval()
    net[4].train()
    assert "(policy.4)" in only(audit({"policy": net}), "warning", "policy").message


def test_statistics_never_updated() -> None:
    net = mlp(4, 2, (8, 8), norm="batch").eval()
    findings = audit(net)  # a lone module: paths without prefix
    assert "never updated" in only(findings, "warning", "1").message
    assert "never updated" in only(findings, "warning", "4").message


@pytest.mark.parametrize(("where", "path"), [("weight", "policy.0"), ("running_var", "policy.1")])
def test_non_finite_parameters_and_statistics_are_errors(where: str, path: str) -> None:
    net = trained(mlp(4, 2, (8, 8), norm="batch"))
    tensor = net[0].weight if where == "weight" else net[1].running_var
    with torch.no_grad():
        tensor.view(-1)[0] = float("nan")
        tensor.view(-1)[1] = float("inf")
    finding = only(audit({"policy": net}), "error", path)
    assert f"{where!r} holds 1 NaN and 1 inf" in finding.message


def test_batchnorm_without_running_statistics_is_an_error() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, track_running_stats=False)).eval()
    finding = only(audit({"critic": net}), "error", "critic.1")
    assert "eval mode too" in finding.message and "track_running_stats=True" in finding.fix


def jump(net: nn.Module) -> None:
    """One train-mode pass over data far from anything the net saw."""
    with rlnorm.training(net), torch.no_grad():
        net(torch.randn(64, 4) * 4 + 20)
    net.eval()


def test_running_statistics_far_from_the_last_batch() -> None:
    net = trained(mlp(4, 2, (8, 8), norm="batch"), passes=100)
    assert problems(audit({"policy": net})) == []
    net[1].momentum = 0.01  # statistics that lag far behind a jump in the data
    jump(net)
    only(audit({"policy": net}), "warning", "policy.1", "far from the last train-mode batch")


def test_statistics_still_settling_are_noted_not_warned() -> None:
    net = mlp(4, 2, (8, 8), norm="batch")
    net[1].momentum = 0.01
    trained(net, passes=5)
    jump(net)
    findings = audit({"policy": net})
    assert problems(findings) == []
    only(findings, "info", "policy.1", "still settling (6 train-mode passes of the ~100")


def test_batch_renorm_warmup_longer_than_the_run() -> None:
    net = trained(mlp(4, 2, (8,), norm="batch_renorm"), passes=10)
    layer = net[1]
    assert isinstance(layer, BatchRenorm1d) and layer.warmup_steps == 1_000
    # 10 passes at 5% of the run: about 200 passes in all, inside the 1,000-pass warm-up
    finding = only(audit({"q": net}, progress=0.05), "warning", "q.1")
    assert finding.message == (
        "Batch Renorm stays in its warm-up for the whole run, so it normalizes as plain "
        "BatchNorm throughout: the warm-up lasts 1,000 train-mode passes and the run makes "
        "about 200"
    )
    assert finding.fix == (
        "for Batch Renorm's correction, a warm-up well below 200 passes "
        "(BatchRenorm1d(warmup_steps=N)), or a longer run"
    )
    # the same warm-up set by the agent's config is a recorded choice: noted, not warned
    agent = type("Agent", (), {"config": None, "modules": lambda self: {"q": net}})()
    agent.config = type("Config", (), {"renorm_warmup_steps": 1_000})()
    chosen = only(audit(agent, progress=0.05), "info", "q.1", "stays in its warm-up")
    assert "set by the config: agent.renorm_warmup_steps=1000" in chosen.message
    assert "--set agent.renorm_warmup_steps=N" in chosen.fix
    agent.config.renorm_warmup_steps = 500  # not this layer's warm-up: still a warning
    only(audit(agent, progress=0.05), "warning", "q.1")
    # without the run's length: noted, not warned
    only(audit({"q": net}), "info", "q.1", "inside its warm-up: 10 of 1000 train-mode passes")
    # 10 passes at 0.1%: 10,000 in all, past warm-up and relaxation
    assert problems(audit({"q": net}, progress=0.001)) == []
    with pytest.raises(ValueError, match="progress"):
        audit(net, progress=0.0)


def test_shared_statistics_reached_by_separate_streams() -> None:
    def shared_findings(net: nn.Module, step) -> list[Finding]:
        gen = torch.Generator().manual_seed(1)
        with StreamWatch({"critic": net}) as watch, rlnorm.training(net), torch.no_grad():
            for _ in range(3):
                step(torch.randn(128, 4, generator=gen), torch.randn(128, 4, generator=gen) + 4)
        findings = audit({"critic": net.eval()}, watch=watch)
        return [f for f in findings if "separate train-mode passes" in f.message]

    net = mlp(4, 2, (8,), norm="batch")
    finding = only(shared_findings(net, lambda a, b: (net(a), net(b))), "warning", "critic.1")
    assert "6 separate train-mode passes" in finding.message
    assert "streams=k" in finding.fix and "joint_forward" in finding.fix
    # the two fixes, and one distribution in separate passes: no such finding
    assert shared_findings(net, lambda a, b: joint_forward(net, a, b)) == []
    assert shared_findings(net, lambda a, b: (net(a), net(torch.randn_like(a)))) == []
    per_stream = mlp(4, 2, (8,), norm="batch", streams=2)
    both = lambda a, b: (per_stream(a, stream=0), per_stream(b, stream=1))  # noqa: E731
    assert shared_findings(per_stream, both) == []


def make_agent(norm: str) -> agents.Agent:
    env = envs.make("CartPole-v1", 4)
    cls = agents.get("ppo")
    config = build_config(cls, {"epochs": 1, "rollout_steps": 16})
    return cls(env.single_observation_space, env.single_action_space, config, norm)


def update_once(agent: agents.Agent) -> None:
    torch.manual_seed(0)
    manager = RolloutManager(agent, envs.make("CartPole-v1", 4))
    manager.reset(seed=0)
    rollout = manager.collect(16)
    with rlnorm.training(*agent.modules().values()):
        agent.update(rollout, progress=0.5)


def test_agent_is_audited_by_module_name() -> None:
    agent = make_agent("batch")
    findings = audit(agent)  # fresh: nothing updated yet, and at rest in train mode
    for path in ("actor.body.1", "actor.body.4", "critic.1", "critic.4"):
        assert "never updated" in only(findings, "warning", path).message
    only(findings, "warning", "actor")
    only(findings, "warning", "critic")
    update_once(agent)
    for module in agent.modules().values():
        module.eval()
    assert problems(audit(agent)) == []


def test_audit_checkpoint_reads_what_the_checkpoint_carries(tmp_path: Path) -> None:
    agent = make_agent("batch_renorm")
    update_once(agent)
    layer = agent.actor.body[1]
    with torch.no_grad():
        layer.last_mean += 10 * (layer.running_var + layer.eps).sqrt()  # the last batch, far off
    path = rlnorm.save(
        agent,
        tmp_path / "ckpt",
        env_id="CartPole-v1",
        counters={"env_steps": 64, "updates": 1},
        extra={"run_config": {"train": {"total_steps": 6400}}},
    )
    findings = audit_checkpoint(path, agents.get)
    # PPO averages statistics over the whole run (cumulative): a noted, expected drift
    only(findings, "info", "actor.body.1", "far from the last one (mean shift 10.00")
    assert not [f for f in findings if f.path == "actor.body.4" and "far from" in f.message]
    # one train-mode pass per update (PPO's statistics refresh) at 1% of the run: ~100 in all
    only(findings, "warning", "critic.1", "the run makes about 100")
    assert not [f for f in findings if f.path in ("actor", "critic")]  # loaded in eval mode
    with pytest.raises(rlnorm.CheckpointError):
        audit_checkpoint(tmp_path / "missing", agents.get)


def test_format_findings() -> None:
    assert format_findings([]) == "no findings"
    findings = [
        Finding("error", "actor.0", "weight holds NaN", "restore"),
        Finding("info", "", "batch-dependent", "act in eval mode"),
    ]
    lines = format_findings(findings).splitlines()
    assert lines == [
        "error   actor.0: weight holds NaN; fix: restore",
        "info    <root>: batch-dependent; fix: act in eval mode",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        findings[0].severity = "info"  # type: ignore[misc]
