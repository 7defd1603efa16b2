"""Member-batched modules (rlnorm.members): K seeds trained as one module.

The property every test here comes back to: **no statistics cross members**. K = 3 modules
are built under seeds 0, 1, 2 and stacked; member k is fed its own input distribution
(mean 3k, scale k + 1), so a BatchNorm that pooled its statistics over members (the
source post's shared-statistics bug) would normalize every member with a mixture none of
them has. Member k of the stack must compute exactly what module k computes alone on its
own inputs (outputs, gradients, running statistics, to 1e-10 in float64), for every
norm kind and every network the agents build.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import rlnorm
from rlnorm import diagnostics, members, metrics
from rlnorm import norm as norms
from rlnorm.agents.offpolicy import SquashedGaussianActor, Temperature, mlp_critics
from rlnorm.agents.ppo import Policy, PPOConfig, entropy, log_prob
from rlnorm.audit import audit
from rlnorm.layers import BatchRenorm1d, CosineLinear, weight_normed_linear
from rlnorm.nets import crossq_layout, joint_forward, mlp
from rlnorm.safety import acting, frozen_statistics, label_layers, training
from rlnorm.sample_mask import sample_mask
from rlnorm.streams import StreamWatch, stream_gap
from rlnorm.targets import StepCounter, TargetNetwork

K, B, F = 3, 8, 5
DT = torch.float64
NORMS = norms.names()
TOL = {"rtol": 0.0, "atol": 1e-10}
Out = torch.Tensor | tuple[torch.Tensor, ...]


def build(factory: Callable[[], nn.Module], seeds: range | list[int] = range(K)) -> list[Any]:
    """One module per seed, in float64, with Batch Renorm's clips active from pass 2."""
    built = []
    for seed in seeds:
        torch.manual_seed(seed)
        module = factory().to(DT)
        for m in module.modules():
            if isinstance(m, BatchRenorm1d):  # warm-up 1 pass, then r/d clips relax over 3
                m.warmup_steps, m.relax_steps = 1, 3
        built.append(module)
    return built


def member_inputs(gen: torch.Generator, batch: int = B, features: int = F) -> torch.Tensor:
    """``[K, batch, features]``: member k's rows drawn from N(3k, (k + 1)^2)."""
    noise = torch.randn(K, batch, features, generator=gen, dtype=DT)
    k = torch.arange(K, dtype=DT).view(K, 1, 1)
    return 3 * k + (k + 1) * noise


def leaves(out: Out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def stacked_loss(out: Out) -> torch.Tensor:
    return sum(members.member_mean(o.sin()) for o in leaves(out))  # type: ignore[return-value]


def single_loss(out: Out) -> torch.Tensor:
    return sum(o.sin().mean() for o in leaves(out))  # type: ignore[return-value]


def assert_close(pairs: list[tuple[str, torch.Tensor, torch.Tensor]]) -> None:
    """Every ``(name, got, want)`` equal to 1e-10 (one check for all: assert_close per
    pair would be most of this file's run time)."""
    for name, got, want in pairs:
        assert got.shape == want.shape and got.dtype == want.dtype, name
    with torch.no_grad():
        errors = [(got - want).abs().max() for _, got, want in pairs if want.numel()]
    if errors:
        worst = int(torch.stack(errors).argmax())
        name, got, want = [p for p in pairs if p[2].numel()][worst]
        assert float(errors[worst]) <= TOL["atol"], f"{name}: {got} != {want}"


def assert_outputs_match(stacked_out: Out, single_outs: list[Out]) -> None:
    assert_close(
        [
            (f"member {k} output {i}", s[k].reshape(o.shape), o)
            for k, single in enumerate(single_outs)
            for i, (s, o) in enumerate(zip(leaves(stacked_out), leaves(single), strict=True))
        ]
    )


def member_slice(t: torch.Tensor, k: int, like: torch.Tensor) -> torch.Tensor:
    """Member k's part of a stacked tensor; a shared one (same shape as ``like``) whole."""
    return t if t.shape == like.shape else t[k].reshape(like.shape)


def named(module: nn.Module) -> dict[str, torch.Tensor]:
    return dict(module.named_parameters()) | dict(module.named_buffers())


def assert_members_match(stacked: nn.Module, singles: list[nn.Module], grads: bool) -> None:
    """Every parameter (and its gradient) and buffer of member k equals module k's."""
    mine, params = named(stacked), dict(stacked.named_parameters())
    assert list(params) == [n for n, _ in singles[0].named_parameters()]
    pairs = []
    for k, single in enumerate(singles):
        for name, t in named(single).items():
            pairs.append((f"member {k} {name}", member_slice(mine[name], k, t), t))
        if grads:
            for name, p in single.named_parameters():
                stacked_grad = params[name].grad
                if p.grad is None:
                    assert stacked_grad is None or not stacked_grad[k].any(), name
                else:
                    assert stacked_grad is not None, name
                    got = member_slice(stacked_grad, k, p)
                    pairs.append((f"member {k} {name}.grad", got, p.grad))
    assert_close(pairs)


@dataclass(frozen=True)
class Case:
    name: str
    factory: Callable[[str], nn.Module]
    call: Callable[[Any, torch.Tensor], Out]


def _policy(discrete: bool) -> Callable[[str], nn.Module]:
    space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,))
    return lambda norm: Policy(F, space, PPOConfig(hidden=(16, 16)), norm)


def _policy_call(m: Policy, x: torch.Tensor) -> Out:
    params = m(x)
    dist = m.distribution(params)
    actions = (x[..., 0] > x[..., 1]).long() if m.discrete else x[..., :2].tanh()
    return params, log_prob(dist, actions), entropy(dist)


CASES = [
    Case("mlp", lambda n: mlp(F, 3, (16, 16), n), lambda m, x: m(x)),
    Case(
        "mlp_crossq_layout",
        lambda n: mlp(F, 3, (16, 16), n, "relu", **crossq_layout(n)),
        lambda m, x: m(x),
    ),
    Case("mlp_streams", lambda n: mlp(F, 3, (16, 16), n, streams=2), lambda m, x: m(x, stream=1)),
    Case("critics", lambda n: mlp_critics(2, F, (16, 16), n, "relu", "joint"), lambda m, x: m(x)),
    Case(
        "critics_joint_forward",
        lambda n: mlp_critics(2, F, (16, 16), n, "relu", "joint", **crossq_layout(n)),
        lambda m, x: joint_forward(m, x, 0.5 * x.flip(-2) + 1.0),
    ),
    Case(
        "critics_per_stream",
        lambda n: mlp_critics(2, F, (16, 16), n, "relu", "per_stream"),
        lambda m, x: (m(x, stream=0), m(x + 1.0, stream=1)),
    ),
    Case(
        "squashed_gaussian_actor",
        lambda n: SquashedGaussianActor(F, 2, (16, 16), n, "relu"),
        lambda m, x: (*m(x), m.mode(x)),
    ),
    Case("ppo_policy_continuous", _policy(False), _policy_call),
    Case("ppo_policy_discrete", _policy(True), _policy_call),
    Case(
        "temperature",
        lambda n: Temperature(0.5),
        lambda m, x: (m(), -(m.log_alpha * (x[..., 0] - 2.0))),
    ),
]


def check_population(stacked: nn.Module, singles: list[nn.Module], call: Callable) -> None:
    """Train-mode passes with a backward each, then eval mode, then frozen statistics:
    outputs, gradients, parameters and buffers of member k against module k's."""
    gen = torch.Generator().manual_seed(1234)
    for _ in range(4):
        x = member_inputs(gen)
        with training(stacked, *singles):
            out = call(stacked, x)
            stacked_loss(out).backward()
            outs = [call(m, x[k]) for k, m in enumerate(singles)]
            for o in outs:
                single_loss(o).backward()
        assert_outputs_match(out, outs)
        assert_members_match(stacked, singles, grads=True)
        for m in (stacked, *singles):
            m.zero_grad(set_to_none=True)
    x = member_inputs(gen)
    with acting(stacked, *singles):
        outs = [call(m, x[k]) for k, m in enumerate(singles)]
        assert_outputs_match(call(stacked, x), outs)
    before = {n: t.clone() for n, t in named(stacked).items()}
    with training(stacked, *singles), frozen_statistics(stacked, *singles):
        out = call(stacked, x)
        stacked_loss(out).backward()
        outs = [call(m, x[k]) for k, m in enumerate(singles)]
        for o in outs:
            single_loss(o).backward()
    assert_outputs_match(out, outs)
    assert_members_match(stacked, singles, grads=True)
    for name, t in named(stacked).items():  # frozen: no statistic moved
        assert torch.equal(t, before[name]), name


#: use_cumulative_statistics changes only mode-dependent kinds: the others run once
STATISTICS = [
    pytest.param(norm, cumulative, id=f"{norm}-{'cumulative' if cumulative else 'ema'}")
    for norm in NORMS
    for cumulative in (False, True)
    if not cumulative or norms.get(norm).mode_dependent
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize(("norm", "cumulative"), STATISTICS)
def test_no_statistics_cross_members(norm: str, cumulative: bool, case: Case) -> None:
    """Member k of the stack, fed its own input distribution, has exactly the outputs,
    gradients and running statistics of module k trained alone on the same inputs: in
    train mode over 4 passes (Batch Renorm's clips relaxing from pass 2), in eval mode,
    and under frozen statistics; with EMA and cumulative (momentum None) statistics."""
    singles = build(lambda: case.factory(norm))
    stacked = members.stack(singles)
    assert members.member_count(stacked) == K
    if cumulative:  # after stacking: the registry must find the member layers
        for m in (stacked, *singles):
            norms.use_cumulative_statistics(m)
    check_population(stacked, singles, case.call)
    if norms.get(norm).mode_dependent and case.name == "mlp":
        # the members' statistics are far apart: pooling them would have failed above
        means = next(m for m in stacked.modules() if norms.uses_running_statistics(m))
        gaps = (means.running_mean[:, None] - means.running_mean[None]).abs().amax(-1)
        assert float(gaps[0, 2]) > 0.1


def test_the_comparison_catches_members_out_of_place() -> None:
    """The check above can fail: a stack whose members 0 and 1 are swapped is caught."""
    singles = build(lambda: mlp(F, 3, (16, 16), "batch"))
    stacked = members.stack(singles)
    members.load_member(stacked, 0, singles[1])
    members.load_member(stacked, 1, singles[0])
    with pytest.raises(AssertionError):
        assert_members_match(stacked, singles, grads=False)


def test_batch_renorm_clips_are_active_in_the_test() -> None:
    """With the test's schedule, r is clipped for the widest member from pass 2 on."""
    (layer,) = build(lambda: BatchRenorm1d(F), [0])
    stacked = members.stack([copy.deepcopy(layer) for _ in range(K)])
    gen = torch.Generator().manual_seed(0)
    limits = []
    for _ in range(4):
        x = member_inputs(gen)
        r_max, _ = stacked.clip_limits()
        limits.append(r_max)
        std = x.var(1, unbiased=False).add(stacked.eps).sqrt()
        ratio = std / stacked.running_var.add(stacked.eps).sqrt()
        stacked(x)
        if r_max > 1:
            assert float(ratio.max()) > r_max or float(ratio.min()) < 1 / r_max
    assert limits[0] == 1 and 1 < limits[1] < limits[2] < limits[3] == 3


@pytest.mark.parametrize("norm", NORMS)
def test_target_network_of_a_stacked_critic(norm: str) -> None:
    """A stack of target networks, and a TargetNetwork of the stacked critic, read and
    follow the online critic per member (Polyak average, every buffer copied)."""
    critics = build(lambda: mlp_critics(2, F, (16, 16), norm, "relu", "joint"))
    targets = [TargetNetwork(c) for c in critics]
    online = members.stack(critics)
    stacked_targets = members.stack(targets)
    wrapped = TargetNetwork(online)
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        x = member_inputs(gen)
        with training(online, *critics):
            members.member_mean(joint_forward(online, x, x + 1)[0]).backward()
            for k, c in enumerate(critics):
                joint_forward(c, x[k], x[k] + 1)[0].mean().backward()
        for t, c in zip(targets, critics, strict=True):
            t.update(c, 0.3)
        stacked_targets.update(online, 0.3)
        wrapped.update(online, 0.3)
        with training(stacked_targets, wrapped, *targets):  # targets read in eval mode anyway
            outs = [t(x[k]) for k, t in enumerate(targets)]
            assert_outputs_match(stacked_targets(x), outs)
            assert_outputs_match(wrapped(x), outs)
        assert_members_match(stacked_targets, targets, grads=False)
        assert_members_match(wrapped.net, [t.net for t in targets], grads=False)


STRUCTURES = {
    "mlp": lambda n: mlp(F, 3, (16, 16), n),
    "mlp_crossq_layout": lambda n: mlp(F, 3, (16, 16), n, **crossq_layout(n)),
    "critics_per_stream": lambda n: mlp_critics(2, F, (16,), n, "relu", "per_stream"),
    "ppo_policy_continuous": _policy(False),
    "temperature": lambda n: Temperature(0.3),
    "target": lambda n: TargetNetwork(mlp(F, 1, (16,), n)),
    "step_counter": lambda n: nn.ModuleDict({"net": mlp(F, 1, (8,), n), "c": StepCounter()}),
}


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("norm", NORMS)
def test_unstack_and_load_member_are_bit_exact(norm: str, structure: str) -> None:
    """unstack(stack(ms), k, fresh) reproduces ms[k].state_dict() bit for bit (names,
    dtypes, values); after training, the unstacked module computes member k's outputs;
    load_member writes a module into one slot and leaves the others alone."""
    ms = build(lambda: STRUCTURES[structure](norm))
    stacked = members.stack(ms)
    for k in range(K):
        fresh = build(lambda: STRUCTURES[structure](norm), [100 + k])[0]
        members.unstack(stacked, k, fresh)
        want, got = ms[k].state_dict(), fresh.state_dict()
        assert list(got) == list(want)
        for key, value in want.items():
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    if structure == "temperature":
        return
    net = stacked.net if structure in ("target", "step_counter") else stacked
    gen = torch.Generator().manual_seed(9)
    with training(stacked), torch.no_grad():  # moves every member's statistics
        for _ in range(3):
            net(member_inputs(gen))
    x = member_inputs(gen)
    for k in range(K):
        fresh = build(lambda: STRUCTURES[structure](norm), [200])[0]
        members.unstack(stacked, k, fresh)
        single = fresh.net if structure in ("target", "step_counter") else fresh
        for mode in (acting, training):
            with mode(stacked, fresh), torch.no_grad():
                assert_outputs_match(
                    tuple(o[k : k + 1] for o in leaves(net(x))), [leaves(single(x[k]))]
                )
    source = build(lambda: STRUCTURES[structure](norm), [300])[0]
    others = {n: t.clone() for n, t in named(stacked).items()}
    members.load_member(stacked, 1, source)
    back = build(lambda: STRUCTURES[structure](norm), [400])[0]
    members.unstack(stacked, 1, back)
    for key, value in source.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    for name, t in named(stacked).items():
        if t.shape == others[name].shape and t.dim() and t.shape[0] == K:
            assert torch.equal(t[0], others[name][0]) and torch.equal(t[2], others[name][2])


TORCH_LAYERS = {
    "BatchNorm1d": lambda: nn.BatchNorm1d(8),
    "BatchNorm1d_momentum_none": lambda: nn.BatchNorm1d(8, momentum=None),
    "BatchNorm1d_no_affine": lambda: nn.BatchNorm1d(8, affine=False),
    "BatchNorm1d_no_running_stats": lambda: nn.BatchNorm1d(8, track_running_stats=False),
    "LayerNorm_no_affine": lambda: nn.LayerNorm(8, elementwise_affine=False),
    "LayerNorm_no_bias": lambda: nn.LayerNorm(8, bias=False),
    "Linear_no_bias": lambda: nn.Linear(8, 8, bias=False),
    "CosineLinear_paper": lambda: CosineLinear(8, 8),
    "Dropout_p0": lambda: nn.Dropout(0.0),
}


@pytest.mark.parametrize("layer", list(TORCH_LAYERS))
def test_torch_layers_and_their_options(layer: str) -> None:
    """torch's own BatchNorm1d (no guard, no last-batch record: those buffers are left
    out when unstacking), without affine or running statistics, LayerNorm without affine
    or bias, Linear without bias, the paper's CosineLinear, a parameterless layer."""

    def factory() -> nn.Module:
        return nn.Sequential(nn.Linear(F, 8), TORCH_LAYERS[layer](), nn.Tanh())

    singles = build(factory)
    stacked = members.stack(singles)
    check_population(stacked, singles, lambda m, x: m(x))
    mine = named(stacked)
    for k in range(K):
        (fresh,) = build(factory, [50])
        members.unstack(stacked, k, fresh)
        assert list(fresh.state_dict()) == list(singles[k].state_dict())
        for key, value in fresh.state_dict().items():
            assert torch.equal(value, member_slice(mine[key], k, value)), key


def test_linear_layers_take_extra_sample_dims() -> None:
    """``[K, T, B, F]`` through Linear, LayerNorm, RMSNorm and CosineLinear, per member."""
    for norm in ("layer", "rms", "cosine", "weight"):
        singles = build(lambda n=norm: mlp(F, 2, (8,), n))
        stacked = members.stack(singles)
        x = torch.randn(K, 2, 3, F, dtype=DT)
        with torch.no_grad():
            assert_outputs_match(stacked(x), [m(x[k]) for k, m in enumerate(singles)])


@pytest.mark.parametrize("norm", NORMS)
def test_one_adam_over_the_stack_is_k_adams(norm: str) -> None:
    """One Adam over the stacked parameters (loss through member_mean, each member's
    gradient clipped by its own norm) equals K separate Adams with torch's clipping, to
    1e-10 after 5 steps: Adam is elementwise, and clipping is per member."""
    singles = build(lambda: _policy(False)(norm))
    stacked = members.stack(singles)
    stacked_opt = torch.optim.Adam(stacked.parameters(), lr=1e-2)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in singles]
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        x = member_inputs(gen)
        with training(stacked, *singles):
            stacked_opt.zero_grad()
            stacked_loss(_policy_call(stacked, x)).backward()
            norms_k = members.clip_grad_norm_(stacked.parameters(), 0.5)
            stacked_opt.step()
            for k, (m, opt) in enumerate(zip(singles, opts, strict=True)):
                opt.zero_grad()
                single_loss(_policy_call(m, x[k])).backward()
                norm_k = torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
                torch.testing.assert_close(norms_k[k], norm_k, **TOL)
                opt.step()
    assert float(norms_k.min()) > 0.5  # the clip was active
    assert_members_match(stacked, singles, grads=True)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    max_norm=st.floats(1e-3, 10.0),
    scales=st.lists(st.floats(1e-4, 1e3), min_size=1, max_size=4),
    shapes=st.lists(st.lists(st.integers(1, 4), max_size=3), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_clip_grad_norm_is_torchs_per_member(
    max_norm: float, scales: list[float], shapes: list[list[int]], seed: int
) -> None:
    """Each member's gradients clipped by its own total norm, as torch clips one module."""
    gen = torch.Generator().manual_seed(seed)
    count = len(scales)
    scale = torch.tensor(scales, dtype=DT)
    stacked = [torch.zeros(count, *s, dtype=DT, requires_grad=True) for s in shapes]
    for p in stacked:
        p.grad = torch.randn(p.shape, generator=gen, dtype=DT) * members.per_member(scale, p)
    singles = [[torch.zeros(s, dtype=DT, requires_grad=True) for s in shapes] for _ in scales]
    for k, params in enumerate(singles):
        for p, q in zip(params, stacked, strict=True):
            p.grad = q.grad[k].clone()  # type: ignore[index]
    got = members.clip_grad_norm_(stacked, max_norm)
    for k, params in enumerate(singles):
        want = torch.nn.utils.clip_grad_norm_(params, max_norm)
        torch.testing.assert_close(got[k], want, rtol=1e-12, atol=0)
        for p, q in zip(params, stacked, strict=True):
            torch.testing.assert_close(q.grad[k], p.grad, rtol=1e-12, atol=1e-300)  # type: ignore[index]


def test_member_mean_gives_each_member_its_own_gradient() -> None:
    w = torch.arange(1.0, K + 1, dtype=DT).view(K, 1, 1).requires_grad_()
    x = torch.randn(K, 4, 2, dtype=DT)
    members.member_mean((w * x).pow(2)).backward()
    for k in range(K):
        wk = w[k].detach().clone().requires_grad_()
        (wk * x[k]).pow(2).mean().backward()
        torch.testing.assert_close(w.grad[k], wk.grad, **TOL)  # type: ignore[index]
    assert float(members.member_mean(torch.ones(K))) == K
    with pytest.raises(ValueError, match="member dimension"):
        members.member_mean(torch.tensor(1.0))


# -- the registry and the tools that read it ------------------------------------------------


def test_the_registry_knows_member_layers() -> None:
    kinds = {}
    for norm in NORMS:
        stacked = members.stack(build(lambda n=norm: mlp(F, 2, (8,), n)))
        kinds[norm] = {
            kind.name for m in stacked.modules() if (kind := norms.kind_of(m)) is not None
        }
        if norm in ("batch", "batch_renorm"):
            assert len(norms.statistics_layers(stacked)) == 1
        else:
            assert norms.statistics_layers(stacked) == {}
    # weight norm has no layer type of its own, stacked or not
    assert kinds == {n: set() if n in ("none", "weight") else {n} for n in NORMS}


@pytest.mark.parametrize("norm", ["batch", "batch_renorm"])
def test_a_member_batch_of_one_is_refused_in_train_mode_only(norm: str) -> None:
    stacked = members.stack(build(lambda: mlp(F, 2, (8,), norm)))
    label_layers({"actor": stacked})
    x = member_inputs(torch.Generator().manual_seed(0), batch=1)
    refused = pytest.raises(rlnorm.NormalizationError, match=r"actor\.1: .*batch of 1 sample")
    with refused, training(stacked):
        stacked(x)
    with acting(stacked):
        assert stacked(x).shape == (K, 1, 2)
    with pytest.raises(ValueError, match="K = 3"):
        stacked(x[0])


def test_diagnostics_audit_and_watch_read_stacked_modules() -> None:
    """stat_drift of the stack is the mean of the members' (same features each); the
    train/eval gap, the audit and the stream watch run on it, pooling over members."""
    singles = build(lambda: mlp(F, 2, (16, 16), "batch"))
    stacked = members.stack(singles)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = member_inputs(gen)
        with training(stacked, *singles), torch.no_grad():
            stacked(x)
            for k, m in enumerate(singles):
                m(x[k])
    drift = diagnostics.stat_drift(stacked)
    each = [diagnostics.stat_drift(m) for m in singles]
    assert set(drift) == set(each[0]) and metrics.DRIFT_MEAN in drift
    for key, value in drift.items():
        assert value == pytest.approx(sum(e[key] for e in each) / K, rel=1e-12)
    state = {n: t.clone() for n, t in named(stacked).items()}
    assert diagnostics.train_eval_gap(stacked, x) > 0
    assert all(torch.equal(t, state[n]) for n, t in named(stacked).items())
    stacked.eval()
    paths = {f.path for f in audit({"actor": stacked}) if "batch-dependent" in f.message}
    assert paths == {"actor.1", "actor.4"}
    with StreamWatch(stacked) as watch, training(stacked), torch.no_grad():
        joint_forward(stacked, x, x + 10)  # two streams 10 apart in every member
        stacked(x)
        stacked(x)
    seen = watch.results()
    assert set(seen) == {"1", "4"} and seen["1"].joint
    assert seen["1"].gap > 1.0


def test_audit_follows_a_member_batch_renorm_schedule() -> None:
    stacked = members.stack(build(lambda: mlp(F, 2, (8,), "batch_renorm")))
    found = [f for f in audit(stacked) if "warm-up" in f.message]
    assert found and found[0].path == "1"
    net = members.stack(build(lambda: mlp(F, 2, (8,), "batch", streams=2)))
    with training(net), torch.no_grad():
        net(member_inputs(torch.Generator().manual_seed(0)), stream=1)
    assert stream_gap(net)[metrics.STREAM_GAP] > 0


# -- what stack refuses ------------------------------------------------------------------------


def test_stack_refuses_modules_that_differ() -> None:
    with pytest.raises(ValueError, match="at least one"):
        members.stack([])
    with pytest.raises(ValueError, match=r"0: Linear\.out_features is 8 in member 1 and 16 in"):
        members.stack([mlp(F, 2, (16,), "none"), mlp(F, 2, (8,), "none")])
    with pytest.raises(ValueError, match="member 1 is a LayerNorm, member 0 a GuardedBatchNorm1d"):
        members.stack([mlp(F, 2, (8,), "batch"), mlp(F, 2, (8,), "layer")])
    a, b = mlp(F, 2, (8,), "batch"), mlp(F, 2, (8,), "batch")
    norms.use_cumulative_statistics(b)
    with pytest.raises(ValueError, match=r"1: GuardedBatchNorm1d.momentum is None in member 1"):
        members.stack([a, b])
    b = copy.deepcopy(a)
    with training(b), torch.no_grad():
        b(torch.randn(4, F))
    with pytest.raises(ValueError, match="'num_batches_tracked' differs"):
        members.stack([a, b])
    c1, c2 = StepCounter(), StepCounter()
    c2.tick()
    with pytest.raises(ValueError, match="'steps' differs"):
        members.stack([c1, c2])


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.Conv2d(1, 1, 3)), r"^1: torch.nn.modules.conv.Conv2d"),
        (nn.ModuleDict({"rnn": nn.GRU(4, 4)}), r"^rnn: torch.nn.modules.rnn.GRU"),
        (nn.Sequential(type("MyLinear", (nn.Linear,), {})(2, 2)), r"^0: a subclass of Linear"),
        (
            nn.utils.parametrizations.orthogonal(nn.Linear(3, 3)),
            r"^<root>: parametrized torch.nn.modules.linear.Linear",
        ),
    ],
)
def test_stack_refuses_layers_it_cannot_batch(module: nn.Module, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        members.stack([module, copy.deepcopy(module)])


def test_stack_refuses_a_stack() -> None:
    stacked = members.stack([mlp(F, 2, (8,), "batch") for _ in range(2)])
    with pytest.raises(TypeError, match="<root>: MLP is member-batched already"):
        members.stack([stacked, copy.deepcopy(stacked)])


def test_weight_norm_is_torchs_per_member() -> None:
    """A stacked weight-normalized Linear keeps torch's names (g: original0, v: original1)
    and computes ``g * v / |v|`` per member and row."""
    layers = build(lambda: weight_normed_linear(4, 3))
    stacked = members.stack(layers)
    assert [n for n, _ in stacked.named_parameters()] == [
        "bias",
        "parametrizations.weight.original0",
        "parametrizations.weight.original1",
    ]
    for k, layer in enumerate(layers):
        torch.testing.assert_close(stacked.weight[k], layer.weight, **TOL)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("cumulative", [False, True])
def test_masked_members_take_statistics_of_their_real_rows_only(
    norm: str, cumulative: bool
) -> None:
    """Members with different numbers of samples (a PPO population's valid steps), padded
    with rows far off the data and masked: member k's outputs on its real rows, gradients
    and running statistics equal module k's run alone on those rows, over 4 train passes."""
    singles = build(lambda: mlp(F, 3, (16, 16), norm))
    stacked = members.stack(singles)
    if cumulative:
        for m in (stacked, *singles):
            norms.use_cumulative_statistics(m)
    counts = [8, 3, 6]
    mask = torch.arange(B)[None] < torch.tensor(counts)[:, None]
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        x = member_inputs(gen).masked_fill(~mask[..., None], 1e3)  # padding would show
        with training(stacked, *singles), sample_mask(mask):
            out = stacked(x)
            (out * mask[..., None]).sum().backward()
            for k, single in enumerate(singles):
                alone = single(x[k, : counts[k]])
                alone.sum().backward()
                torch.testing.assert_close(out[k, : counts[k]], alone, **TOL)
    assert_members_match(stacked, singles, grads=True)


def test_a_mask_with_fewer_than_two_real_rows_is_refused() -> None:
    stacked = members.stack(build(lambda: mlp(F, 2, (8,), "batch")))
    mask = torch.ones(K, B, dtype=torch.bool)
    mask[1, 1:] = False
    x = member_inputs(torch.Generator().manual_seed(0))
    refused = pytest.raises(rlnorm.NormalizationError, match="batch of 1 sample")
    with refused, training(stacked), sample_mask(mask):
        stacked(x)
    mismatched = pytest.raises(ValueError, match="does not match")
    with mismatched, training(stacked), sample_mask(mask[:, :3]):
        stacked(x)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_member_adam_is_k_adams_and_an_idle_member_stays_put(norm: str, fused: bool) -> None:
    """MemberAdam over the stack equals K torch Adams (to 1e-10 after 5 steps), and a
    member left out of a step by ``stepping`` keeps its weights, moments and step count, as
    if the step had never been offered to it (member 1 skips steps 2 and 4). Fused: the
    fused kernel while the counts are even (steps 0-2), the per-member path after."""
    from rlnorm.member_adam import MemberAdam, stepping

    singles = build(lambda: _policy(False)(norm))
    stacked = members.stack(singles)
    hyper = {"lr": 1e-2, "eps": 1e-5, "betas": (0.5, 0.999), "fused": fused}
    stacked_opt = MemberAdam(stacked.parameters(), **hyper)
    opts = [torch.optim.Adam(m.parameters(), **hyper) for m in singles]
    gen = torch.Generator().manual_seed(3)
    for step in range(5):
        x = member_inputs(gen)
        active = torch.tensor([True, step not in (2, 4), True])
        with training(stacked, *singles):
            stacked_opt.zero_grad()
            stacked_loss(_policy_call(stacked, x)).backward()
            with stepping(stacked_opt, active):
                stacked_opt.step()
            for k, (m, opt) in enumerate(zip(singles, opts, strict=True)):
                opt.zero_grad()
                single_loss(_policy_call(m, x[k])).backward()
                if active[k]:
                    opt.step()
    assert_members_match(stacked, singles, grads=False)
    counts = {float(s["step"][1]) for s in stacked_opt.state.values()}
    assert counts == {3.0}
    with pytest.raises(TypeError, match="MemberAdam"), stepping(opts[0], active):
        pass


def test_quarantine_finds_exactly_the_members_with_a_non_finite_weight() -> None:
    """The cheap first check (2-norms) may overflow on huge finite weights: then the exact
    check finds no member; NaN and inf are found in the member that holds them."""
    from rlnorm.quarantine import Quarantine

    net = members.stack([nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)) for _ in range(4)])
    quarantine = Quarantine({"net": net}, 4)
    assert quarantine.nonfinite() == []
    weight = next(net.parameters())
    with torch.no_grad():
        weight[1].fill_(1e30)  # finite, but its squares overflow float32
        assert quarantine.nonfinite() == []
        weight[2, 0, 0] = torch.inf
        weight[3, 1, 2] = torch.nan
    assert quarantine.nonfinite() == [2, 3]
