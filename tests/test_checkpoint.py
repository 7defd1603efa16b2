"""Checkpoints: bit-exact round trip into eval mode, no pickle, refusal of damaged or foreign
files, norm/agent mismatch, and atomic replacement of a previous checkpoint.

Agents are trained on one or two real CartPole rollouts (a few hundred env steps), so the
BatchNorm running statistics differ from their defaults and the optimizer holds Adam state.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import rlnorm
import rlnorm.checkpoint as ckpt_mod
from rlnorm import agents, envs
from rlnorm.config import build_config
from rlnorm.rollout import RolloutManager

NORMS = ["none", "layer", "batch"]
ENV_ID = "CartPole-v1"


# --------------------------------------------------------------------------- helpers


def make_agent(norm: str, **config: object) -> agents.Agent:
    env = envs.make(ENV_ID, 8)
    cls = agents.get("ppo")
    return cls(
        env.single_observation_space,
        env.single_action_space,
        build_config(cls, {"epochs": 4, **config}),
        norm,
    )


def train_a_little(agent: agents.Agent, updates: int = 2, seed: int = 0) -> RolloutManager:
    """Collect rollouts in eval mode and update in train mode, as the learner does."""
    torch.manual_seed(seed)
    manager = RolloutManager(agent, envs.make(ENV_ID, 8))
    manager.reset(seed=seed)
    for i in range(updates):
        rollout = manager.collect(16)
        with rlnorm.training(*agent.modules().values()):
            agent.update(rollout, progress=0.1 * (i + 1))
    return manager


def set_train_mode(agent: agents.Agent) -> None:
    """The failure of the source post: a checkpoint written while the nets are in train mode."""
    for module in agent.modules().values():
        module.train()


def eval_batch(manager: RolloutManager) -> torch.Tensor:
    """Visited states plus off-distribution ones, 4-dim CartPole observations."""
    visited = manager.collect(8).obs.flatten(0, 1).to(torch.float32)
    gen = torch.Generator().manual_seed(7)
    return torch.cat([visited, 0.5 * torch.randn(32, 4, generator=gen)])


def full_state(agent: agents.Agent) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value
        for name, module in agent.modules().items()
        for key, value in module.state_dict().items()
    }


def plain(value: object) -> object:
    """Tuples as lists (JSON has no tuple), for comparing optimizer param groups."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def assert_same_state(a: agents.Agent, b: agents.Agent) -> None:
    sa, sb = full_state(a), full_state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), f"{key} differs after the round trip"


def assert_same_optimizer(a: agents.Agent, b: agents.Agent) -> None:
    assert a.optimizers().keys() == b.optimizers().keys()
    for name, opt in a.optimizers().items():
        sa, sb = opt.state_dict(), b.optimizers()[name].state_dict()
        assert sa["state"].keys() == sb["state"].keys()
        assert sa["state"], "the optimizer should hold state after updates"
        for pid, pstate in sa["state"].items():
            assert pstate.keys() == sb["state"][pid].keys()
            for key, value in pstate.items():
                other = sb["state"][pid][key]
                assert torch.as_tensor(value).dtype == torch.as_tensor(other).dtype
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), (pid, key)
        assert plain(sa["param_groups"]) == plain(sb["param_groups"])


def rewrite_meta(path: Path, **changes: object) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


def fix_checksum(path: Path, name: str) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained checkpoint per norm, saved with the nets left in train mode."""
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for norm in NORMS:
        agent = make_agent(norm)
        train_a_little(agent)
        set_train_mode(agent)
        out[norm] = rlnorm.save(agent, root / norm, env_id=ENV_ID)
    return out


@pytest.fixture
def batch_ckpt(saved: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the batch-norm checkpoint, free to damage."""
    return Path(shutil.copytree(saved["batch"], tmp_path / "ckpt"))


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("norm", NORMS)
def test_round_trip_is_bit_exact_and_loads_in_eval_mode(norm: str, tmp_path: Path) -> None:
    agent = make_agent(norm)
    manager = train_a_little(agent)
    if norm == "batch":
        bn = [m for m in agent.actor.modules() if isinstance(m, nn.BatchNorm1d)]
        assert bn, "a batch-norm agent should contain BatchNorm1d layers"
        for layer in bn:  # the statistics really moved away from torch's defaults
            assert int(layer.num_batches_tracked) > 0
            assert not torch.equal(layer.running_mean, torch.zeros_like(layer.running_mean))
            assert not torch.equal(layer.running_var, torch.ones_like(layer.running_var))
    obs = eval_batch(manager)
    set_train_mode(agent)  # saved mid-training

    path = rlnorm.save(
        agent, tmp_path / "ckpt", env_id=ENV_ID, counters={"env_steps": 256, "updates": 2}
    )
    # save() records the agent, it does not change its modes
    assert all(m.training for mod in agent.modules().values() for m in mod.modules())
    loaded = rlnorm.load(path)

    assert loaded.name == "ppo" and loaded.norm == norm
    assert loaded.counters == {"env_steps": 256, "updates": 2}
    for name, module in loaded.modules().items():
        stuck = [n for n, m in module.named_modules() if m.training]
        assert not stuck, f"{name}: submodules {stuck} loaded in train mode"
    assert_same_state(agent, loaded)
    assert_same_optimizer(agent, loaded)

    # Same eval-mode policy: actions, logits, and (on the same random draws) samples,
    # log-probs and values.
    assert torch.equal(rlnorm.predict(agent, obs), rlnorm.predict(loaded, obs))
    with rlnorm.acting(*agent.acting_modules(), *loaded.acting_modules()):
        torch.manual_seed(0)
        out_a = agent.act(obs)
        torch.manual_seed(0)
        out_b = loaded.act(obs)
        assert torch.equal(agent.actor(obs), loaded.actor(obs))
    for key in ("sample", "log_prob", "value"):
        assert torch.equal(out_a.extras[key], out_b.extras[key]), key
    # acting restored the original agent's train mode, and kept the loaded one in eval mode
    assert agent.actor.training and not loaded.actor.training


@pytest.mark.parametrize("norm", NORMS)
def test_train_mode_outputs_differ_only_for_batch_norm(norm: str, saved: dict[str, Path]) -> None:
    """What the eval-mode load protects against: a net run in the mode it was saved in."""
    loaded = rlnorm.load(saved[norm])
    obs = eval_batch(train_a_little(make_agent(norm), updates=0))
    with torch.no_grad():
        eval_out = loaded.actor(obs)
        left_in_train = copy.deepcopy(loaded.actor).train()
        train_out = left_in_train(obs)
    if norm == "batch":
        # batch statistics instead of running ones: a different function of the states
        assert not torch.allclose(train_out, eval_out, atol=1e-4)
        # ... and a lone state cannot be run at all in train mode
        with pytest.raises(rlnorm.NormalizationError, match="lone state"):
            left_in_train(obs[:1])
        # while the loaded (eval-mode) policy acts on a lone state as on the same state in a batch
        assert rlnorm.predict(loaded, obs[0]).shape == ()
        with rlnorm.acting(loaded.actor):
            assert torch.allclose(loaded.actor(obs[:1]), eval_out[:1], atol=1e-6)
    else:
        assert torch.allclose(train_out, eval_out, atol=0, rtol=0)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_training_resumes_identically_after_load(norm: str, tmp_path: Path) -> None:
    """Weights, running statistics and Adam moments all come back: one more update on the
    same rollout with the same seed gives bit-identical networks."""
    agent = make_agent(norm)
    manager = train_a_little(agent)
    loaded = rlnorm.load(rlnorm.save(agent, tmp_path / "ckpt", env_id=ENV_ID))
    rollout = manager.collect(16)
    for a in (agent, loaded):
        torch.manual_seed(123)
        with rlnorm.training(*a.modules().values()):
            a.update(rollout, progress=0.5)
    assert_same_state(agent, loaded)
    assert_same_optimizer(agent, loaded)


# --------------------------------------------------------------------------- no pickle


class _Booby:
    """Unpickling this runs ``Path.touch(marker)``: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_raw_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    # The payload is live: unpickling it really creates its marker.
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Booby(control)))
    assert control.exists()

    marker = tmp_path / "MARKER"
    bad = tmp_path / "model.pkl"
    bad.write_bytes(pickle.dumps(_Booby(marker)))
    with pytest.raises(rlnorm.CheckpointError, match="pickle") as info:
        rlnorm.load(bad)
    assert "never unpickles" in str(info.value)
    assert str(bad) in str(info.value)
    assert not marker.exists(), "rlnorm.load unpickled the file"


@pytest.mark.parametrize(
    ("zipped", "what"), [(True, "zip archive"), (False, "pickle")], ids=["torch.save", "legacy"]
)
def test_torch_save_file_is_refused(zipped: bool, what: str, tmp_path: Path) -> None:
    bad = tmp_path / "model.pt"
    torch.save(make_agent("batch").actor.state_dict(), bad, _use_new_zipfile_serialization=zipped)
    with pytest.raises(rlnorm.CheckpointError, match=what) as info:
        rlnorm.load(bad)
    assert "never unpickles" in str(info.value)


# --------------------------------------------------------------------------- damaged files


def _truncate(path: Path) -> None:
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray((path / "weights.safetensors").read_bytes())
    data[-10] ^= 0xFF  # inside the tensor data: the header still parses
    (path / "weights.safetensors").write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, r"weights\.safetensors is corrupted or truncated"),
        (_flip_byte, r"weights\.safetensors is corrupted or truncated"),
        (lambda p: (p / "meta.json").unlink(), r"meta\.json is missing"),
        (lambda p: (p / "weights.safetensors").unlink(), r"weights\.safetensors is missing"),
        (lambda p: (p / "meta.json").write_text('{"format": "rlnorm-'), r"not valid JSON"),
        (lambda p: (p / "meta.json").write_bytes(b"\xff\xfe\x00"), r"not valid JSON"),
        (lambda p: (p / "meta.json").write_text("[1, 2]"), r"not an rlnorm checkpoint"),
        (lambda p: rewrite_meta(p, format="sb3-zip"), r"not an rlnorm checkpoint"),
        (lambda p: rewrite_meta(p, format_version=2), r"format version 2.*reads version 1"),
    ],
    ids=[
        "truncated",
        "flipped-byte",
        "no-meta",
        "no-weights",
        "meta-not-json",
        "meta-not-utf8",
        "meta-not-object",
        "foreign-format",
        "future-version",
    ],
)
def test_damaged_checkpoint_is_refused(damage, message: str, batch_ckpt: Path) -> None:
    damage(batch_ckpt)
    with pytest.raises(rlnorm.CheckpointError, match=message):
        rlnorm.load(batch_ckpt)


def test_truncated_weights_with_matching_checksum_are_refused(batch_ckpt: Path) -> None:
    """Even when the checksum was rewritten to match, safetensors' own parse refuses it."""
    _truncate(batch_ckpt)
    fix_checksum(batch_ckpt, "weights.safetensors")
    with pytest.raises(rlnorm.CheckpointError, match=r"unreadable safetensors"):
        rlnorm.load(batch_ckpt)


@pytest.mark.parametrize(
    "missing_key", ["agent", "norm", "agent_config", "observation_space", "optimizer_param_groups"]
)
def test_meta_missing_a_required_key_is_a_checkpoint_error(
    missing_key: str, batch_ckpt: Path
) -> None:
    """A meta.json of the right format and version but lacking a key is refused with a
    CheckpointError naming the key (not a bare KeyError and a traceback)."""
    meta = json.loads((batch_ckpt / "meta.json").read_text())
    del meta[missing_key]
    (batch_ckpt / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(rlnorm.CheckpointError, match=missing_key):
        rlnorm.load(batch_ckpt, norm="batch")


@pytest.mark.parametrize(
    ("sha256", "flip"),
    [(["not", "a", "mapping"], False), ({"../elsewhere.bin": "0" * 64}, False), ({}, True)],
    ids=["not-a-mapping", "names-a-foreign-file", "empty-and-flipped-byte"],
)
def test_malformed_checksums_are_a_checkpoint_error(
    sha256: object, flip: bool, batch_ckpt: Path
) -> None:
    """A checksum table that is not a mapping, names a file outside the checkpoint, or is
    missing (which would skip the integrity check) is refused as a malformed meta.json."""
    rewrite_meta(batch_ckpt, sha256=sha256)
    if flip:
        _flip_byte(batch_ckpt)
    with pytest.raises(rlnorm.CheckpointError, match=r"sha256|checksum"):
        rlnorm.load(batch_ckpt)


# --------------------------------------------------------------------------- mismatches


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"norm": "layer"}, r"norm 'batch', not 'layer'"), ({"agent": "sac"}, r"'ppo'.*'sac'")],
)
def test_asking_for_another_norm_or_agent_is_refused(
    kwargs: dict[str, str], message: str, saved: dict[str, Path]
) -> None:
    with pytest.raises(rlnorm.CheckpointError, match=message):
        rlnorm.load(saved["batch"], **kwargs)
    # the matching request loads
    assert rlnorm.load(saved["batch"], norm="batch", agent="ppo").norm == "batch"


def test_weights_of_another_norm_do_not_fit(saved: dict[str, Path], batch_ckpt: Path) -> None:
    """Layer-norm weights under a batch-norm meta.json, checksum fixed so that only the
    comparison of the tensors with the agent's modules can catch it."""
    shutil.copyfile(saved["layer"] / "weights.safetensors", batch_ckpt / "weights.safetensors")
    fix_checksum(batch_ckpt, "weights.safetensors")
    with pytest.raises(rlnorm.CheckpointError, match=r"weights do not fit.*'batch'") as info:
        rlnorm.load(batch_ckpt)
    assert "running_mean" in str(info.value)  # names what is missing


def test_weights_of_another_shape_do_not_fit(tmp_path: Path, batch_ckpt: Path) -> None:
    """Same keys, other widths: the per-module shape check refuses them."""
    other = rlnorm.save(make_agent("batch", hidden=(32, 32)), tmp_path / "narrow", env_id=ENV_ID)
    shutil.copyfile(other / "weights.safetensors", batch_ckpt / "weights.safetensors")
    fix_checksum(batch_ckpt, "weights.safetensors")
    shape = r"tensor 'actor\.[^']*' is torch\.float32 \(32"
    with pytest.raises(rlnorm.CheckpointError, match=shape):
        rlnorm.load(batch_ckpt)


# --------------------------------------------------------------------------- atomic write


def _weights_of(path: Path) -> dict[str, torch.Tensor]:
    return full_state(rlnorm.load(path))


def test_saving_over_a_checkpoint_replaces_it_completely(tmp_path: Path) -> None:
    first, second = make_agent("batch"), make_agent("batch")
    train_a_little(second, updates=1)
    path = tmp_path / "last"
    rlnorm.save(first, path, env_id=ENV_ID)
    rlnorm.save(second, path, env_id=ENV_ID)
    assert_same_state(second, rlnorm.load(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"], "temporary files left"
    assert sorted(p.name for p in path.iterdir()) == [
        "meta.json",
        "optimizer.safetensors",
        "weights.safetensors",
    ]


def test_crash_while_writing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous, newer = make_agent("batch"), make_agent("batch")
    train_a_little(previous, updates=1)
    path = rlnorm.save(previous, tmp_path / "last", env_id=ENV_ID)

    real_save_file = ckpt_mod.safetensors.torch.save_file
    calls = []

    def crash_after_first(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) > 1:
            raise OSError("simulated crash: disk full")
        real_save_file(*args, **kwargs)

    monkeypatch.setattr(ckpt_mod.safetensors.torch, "save_file", crash_after_first)
    with pytest.raises(rlnorm.CheckpointError, match=r"cannot write checkpoint .*simulated crash"):
        rlnorm.save(newer, path, env_id=ENV_ID)
    monkeypatch.undo()

    assert len(calls) == 2, "the crash should hit the second file, after weights were written"
    assert_same_state(previous, rlnorm.load(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"], "temporary files left"


def test_failure_while_swapping_in_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If moving the new checkpoint into place fails after the old one was moved aside,
    the old one is moved back: the previous checkpoint still loads from ``path``."""
    previous = make_agent("batch")
    train_a_little(previous, updates=1)
    path = rlnorm.save(previous, tmp_path / "last", env_id=ENV_ID)

    real_replace = ckpt_mod.os.replace

    def failing_replace(src: object, dst: object) -> None:
        if Path(src).name.startswith(".last.tmp-"):
            raise OSError("simulated failure renaming the new checkpoint into place")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", failing_replace)
    with pytest.raises(
        rlnorm.CheckpointError, match=r"cannot write checkpoint .*simulated failure"
    ):
        rlnorm.save(make_agent("batch"), path, env_id=ENV_ID)
    monkeypatch.undo()

    assert_same_state(previous, rlnorm.load(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"], "temporary files left"


def test_a_save_killed_between_its_two_renames_is_recovered(tmp_path: Path) -> None:
    """SIGKILL after the old checkpoint was moved aside and before the new one moved in
    leaves only the backup: loading (and the next save) put it back instead of losing it."""
    agent = make_agent("batch")
    path = rlnorm.save(agent, tmp_path / "last", env_id=ENV_ID)
    os.replace(path, tmp_path / ".last.old")  # the state such a kill leaves behind
    loaded = rlnorm.load(path)
    assert path.is_dir() and not (tmp_path / ".last.old").exists()
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            agent.actor.state_dict().values(), loaded.actor.state_dict().values(), strict=True
        )
    )
