"""The classic-control envs' speed machinery: sparse autoresets on CPU (``fast=True``),
the pool of fresh states refilled by halves, and dense steps free of host reads.

``fast=True`` must follow the same dynamics as ``fast=False`` (only the fresh states of
resets differ, drawn from the same bounds); every reset must take a draw no other reset
took; a dense step must never read a value back to the host.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from rlnorm.envs import CartPole, env_ids, make
from rlnorm.envs.base import FAST_MIN_ENVS
from rlnorm.errors import EnvError

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


#: gymnasium's reset distributions: per state row, uniform in (low, high); None: always 0.
RESETS: dict[str, list[tuple[float, float] | None]] = {
    "CartPole-v1": [(-0.05, 0.05)] * 4,
    "Acrobot-v1": [(-0.1, 0.1)] * 4,
    "MountainCar-v0": [(-0.6, -0.4), None],
    "MountainCarContinuous-v0": [(-0.6, -0.4), None],
    "Pendulum-v1": [(-np.pi, np.pi), (-1.0, 1.0)],
}


def assert_fresh(env_id: str, states: torch.Tensor, dtype: torch.dtype) -> None:
    """``states`` (one row per sub-env) lie in gymnasium's reset bounds, rounded to
    ``dtype`` as fresh values are."""
    for column, bounds in zip(states.to(torch.float64).T, RESETS[env_id], strict=True):
        if bounds is None:
            assert (column == 0).all()
        else:
            low, high = (torch.tensor(b, dtype=dtype).double() for b in bounds)
            assert ((column >= low) & (column <= high)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("env_id", env_ids())
def test_sparse_autoresets_follow_the_dense_dynamics(env_id: str, dtype: torch.dtype) -> None:
    """The same states and actions give bit-identical rewards, flags, observations and
    states on every sub-env that did not reset, NaN, inf and -0.0 included; the sub-envs
    that reset take fresh states inside the reset bounds. The sparse env is put back in
    the dense one's state after each step so that the two stay in lockstep."""
    n = 64
    fast, ref = (make(env_id, n, dtype=dtype, max_episode_steps=7, fast=f) for f in (True, False))
    assert fast.fast and not ref.fast
    ref.reset(seed=1)
    odd = ref.state.clone()
    odd[:4, 0] = torch.tensor([float("nan"), float("inf"), -0.0, float("-inf")])
    ref.state = odd
    fast.reset(seed=2)
    fast.state = odd
    gen = torch.Generator().manual_seed(2)
    resets = 0
    for _ in range(40):
        resetting = ~ref._alive.clone()
        actions = random_actions(env_id, n, gen)
        out_fast, out_ref = fast.step(actions), ref.step(actions)
        for a, b in zip(out_fast[1:4], out_ref[1:4], strict=True):
            assert a.dtype == b.dtype and torch.equal(bits(a), bits(b))
        kept = ~resetting
        assert torch.equal(bits(out_fast[0][kept]), bits(out_ref[0][kept]))
        assert torch.equal(bits(fast.state[kept]), bits(ref.state[kept]))
        assert_fresh(env_id, fast.state[resetting], dtype)
        resets += int(resetting.sum())
        fast.state = ref.state
    assert resets > 100
    assert torch.isfinite(fast.state).all()  # the odd states were reset away


@pytest.mark.parametrize("fast", [False, True])
def test_every_reset_takes_a_fresh_draw_even_when_episodes_last_one_step(fast: bool) -> None:
    """With a one-step limit every sub-env resets every other step, the fastest possible:
    the pool, refilled half per step, and the sparse draws must never hand out a value
    twice, and the fresh states must be uniform in the reset bounds."""
    n, steps = 1000, 40
    env = CartPole(num_envs=n, dtype=torch.float64, max_episode_steps=1, fast=fast)
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


def test_sparse_autoresets_are_reproducible_from_a_seed() -> None:
    gen = torch.Generator().manual_seed(0)
    actions = [torch.randint(0, 2, (256,), generator=gen) for _ in range(60)]
    runs = []
    for _ in range(2):
        env = CartPole(num_envs=256, max_episode_steps=20, fast=True)
        runs.append([env.reset(seed=5)[0], *(env.step(a)[0] for a in actions)])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_fast_is_chosen_automatically_for_large_batches_on_cpu() -> None:
    assert CartPole(num_envs=FAST_MIN_ENVS).fast
    assert not CartPole(num_envs=FAST_MIN_ENVS - 1).fast
    assert CartPole(num_envs=4, fast=True).fast
    assert not CartPole(num_envs=FAST_MIN_ENVS, fast=False).fast


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("env_id", env_ids())
def test_state_dict_continues_exactly_pool_included(env_id: str, fast: bool) -> None:
    """A run saved mid-way and restored into a new env (after a reset with the same
    options) continues with the same observations, autoresets included."""
    gen = torch.Generator().manual_seed(0)
    env = make(env_id, 16, max_episode_steps=5, fast=fast)
    env.reset(seed=3)
    for _ in range(7):  # an odd count, so the next refill is the second half
        env.step(random_actions(env_id, 16, gen))
    saved = env.state_dict()
    actions = [random_actions(env_id, 16, gen) for _ in range(12)]
    expected = [env.step(a)[0] for a in actions]
    restored = make(env_id, 16, max_episode_steps=5, fast=fast)
    restored.reset(seed=99)
    restored.load_state_dict(saved)
    for a, want in zip(actions, expected, strict=True):
        assert torch.equal(restored.step(a)[0], want)


# Tensor methods that read values back to the host (on an accelerator, a sync).
READS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "nonzero")


@pytest.mark.parametrize("env_id", env_ids())
def test_a_dense_step_reads_nothing_back_from_the_tensors(
    env_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``.item()``, ``bool(tensor)`` or boolean-mask indexing in a dense step (on an
    accelerator each would wait for the device), through autoresets. The exception: on
    CPU, where there is no device to wait for, box actions are checked for NaN with one
    ``bool``."""
    env = make(env_id, 32, max_episode_steps=2, fast=False)
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


def test_sparse_autoresets_are_refused_off_the_cpu() -> None:
    # Checked before anything is allocated, so a meta device shows it without a GPU.
    with pytest.raises(EnvError, match=r"fast=True .* wait for the device"):
        CartPole(num_envs=FAST_MIN_ENVS, device="meta", fast=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_default_stays_dense_on_cuda() -> None:
    assert not CartPole(num_envs=FAST_MIN_ENVS, device="cuda").fast


def test_a_saved_state_loads_only_into_the_same_autoreset_path() -> None:
    saved = CartPole(num_envs=16, fast=True)
    saved.reset(seed=0)
    dense = CartPole(num_envs=16, fast=False)
    dense.reset(seed=0)
    with pytest.raises(EnvError, match="fast=True"):
        dense.load_state_dict(saved.state_dict())
