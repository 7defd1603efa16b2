"""The classic-control envs' speed machinery: the fast autoreset path, the pool of fresh
states refilled by halves, and steps free of host reads.

``fast=True`` (a bitwise blend through integer views) must equal ``fast=False``
(``torch.where``) bit for bit, NaN, inf and -0.0 included; the pool must give every
reset a draw no other reset took; a step must never read a value back to the host.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from rlnorm.envs import CartPole, env_ids, make
from rlnorm.envs.base import FAST_MIN_ENVS

DISCRETE = {"CartPole-v1": 2, "MountainCar-v0": 3, "Acrobot-v1": 3}


def random_actions(env_id: str, n: int, gen: torch.Generator) -> torch.Tensor:
    if env_id in DISCRETE:
        return torch.randint(0, DISCRETE[env_id], (n,), generator=gen)
    return torch.rand(n, 1, generator=gen) * 6 - 3  # beyond the bounds too: clipped


def bits(t: torch.Tensor) -> torch.Tensor:
    """``t``'s raw bits, so that NaN == NaN and -0.0 != 0.0 in comparisons (flags as is)."""
    if t.dtype == torch.bool:
        return t
    return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("env_id", env_ids())
def test_fast_path_equals_reference_path_bit_for_bit(env_id: str, dtype: torch.dtype) -> None:
    """Same seed, same actions: identical observations, rewards, flags and states on every
    step, through terminations, truncations and autoresets, and from states holding NaN,
    inf and -0.0 (which the blend must carry, or replace on a reset, like torch.where)."""
    n = 64
    fast, ref = (make(env_id, n, dtype=dtype, max_episode_steps=7, fast=f) for f in (True, False))
    assert fast.fast and not ref.fast
    for env in (fast, ref):
        env.reset(seed=1)
        odd = env.state.clone()
        odd[:4, 0] = torch.tensor([float("nan"), float("inf"), -0.0, float("-inf")])
        env.state = odd
    gen_fast, gen_ref = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    resets = 0
    for _ in range(40):
        out_fast = fast.step(random_actions(env_id, n, gen_fast))
        out_ref = ref.step(random_actions(env_id, n, gen_ref))
        for a, b in zip(out_fast[:4], out_ref[:4], strict=True):
            assert a.dtype == b.dtype and torch.equal(bits(a), bits(b))
        assert torch.equal(bits(fast.state), bits(ref.state))
        resets += int((out_ref[2] | out_ref[3]).sum())
    assert resets > 100
    assert torch.isfinite(fast.state).all()  # the odd states were reset away


def test_every_reset_takes_a_fresh_draw_even_when_episodes_last_one_step() -> None:
    """With a one-step limit every sub-env resets every other step, the fastest possible:
    the pool, refilled half per step, must still never hand out a draw twice, and the
    fresh states must be uniform in the reset bounds."""
    n, steps = 1000, 40
    env = CartPole(num_envs=n, dtype=torch.float64, max_episode_steps=1)
    first, _ = env.reset(seed=0)
    fresh = [first]
    actions = torch.zeros(n, dtype=torch.long)
    for t in range(steps):
        obs, reward, *_ = env.step(actions)
        if t % 2 == 1:  # autoreset steps: every sub-env restarted
            assert (reward == 0).all()
            fresh.append(obs)
    states = torch.cat(fresh).numpy()
    assert len(np.unique(states, axis=0)) == len(states) == n * (steps // 2 + 1)
    assert np.abs(states).max() <= 0.05
    # Uniform on [-0.05, 0.05]: mean 0 and variance 0.1^2 / 12, per coordinate.
    np.testing.assert_allclose(states.mean(axis=0), 0.0, atol=3e-4)
    np.testing.assert_allclose(states.var(axis=0), 0.01 / 12, rtol=0.02)


def test_fast_is_chosen_automatically_for_large_batches_on_cpu() -> None:
    assert CartPole(num_envs=FAST_MIN_ENVS).fast
    assert not CartPole(num_envs=FAST_MIN_ENVS - 1).fast
    assert CartPole(num_envs=4, fast=True).fast
    assert not CartPole(num_envs=FAST_MIN_ENVS, fast=False).fast


@pytest.mark.parametrize("env_id", env_ids())
def test_state_dict_continues_exactly_pool_included(env_id: str) -> None:
    """A run saved mid-way and restored into a new env (after a reset with the same
    options) continues with the same observations, autoresets included."""
    gen = torch.Generator().manual_seed(0)
    env = make(env_id, 16, max_episode_steps=5)
    env.reset(seed=3)
    for _ in range(7):  # an odd count, so the next refill is the second half
        env.step(random_actions(env_id, 16, gen))
    saved = env.state_dict()
    actions = [random_actions(env_id, 16, gen) for _ in range(12)]
    expected = [env.step(a)[0] for a in actions]
    restored = make(env_id, 16, max_episode_steps=5)
    restored.reset(seed=99)
    restored.load_state_dict(saved)
    for a, want in zip(actions, expected, strict=True):
        assert torch.equal(restored.step(a)[0], want)


# Tensor methods that read values back to the host (on an accelerator, a sync).
READS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero")


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("env_id", env_ids())
def test_a_step_reads_nothing_back_from_the_tensors(
    env_id: str, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``.item()``, ``bool(tensor)`` or boolean-mask indexing in a step (on an
    accelerator each would wait for the device), through autoresets. The exception: on
    CPU, where there is no device to wait for, box actions are checked for NaN with one
    ``bool``."""
    env = make(env_id, 32, max_episode_steps=2, fast=fast)
    env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    actions = [random_actions(env_id, 32, gen) for _ in range(4)]
    reads: list[str] = []

    def spy(name: str) -> Callable[..., object]:
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            reads.append(name)
            return original(self, *args, **kwargs)

        return read

    def no_mask(original: Callable[..., object]) -> Callable[..., object]:
        def index(self: torch.Tensor, key: object, *rest: object) -> object:
            keys = key if isinstance(key, tuple) else (key,)
            assert not any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys)
            return original(self, key, *rest)

        return index

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    for name in ("__getitem__", "__setitem__"):
        monkeypatch.setattr(torch.Tensor, name, no_mask(getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "nonzero", lambda *a, **k: pytest.fail("torch.nonzero in a step"))
    for a in actions:
        env.step(a)
    monkeypatch.undo()
    assert reads == ([] if env_id in DISCRETE else ["__bool__"] * 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("env_id", env_ids())
def test_fast_path_on_cuda_syncs_nothing_and_equals_the_reference(env_id: str) -> None:
    fast, ref = (make(env_id, 256, device="cuda", fast=f) for f in (True, False))
    fast.reset(seed=0)
    ref.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        a = random_actions(env_id, 256, gen).cuda()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out_fast = fast.step(a)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for x, y in zip(out_fast[:4], ref.step(a)[:4], strict=True):
            assert torch.equal(bits(x), bits(y))
