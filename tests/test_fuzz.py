"""Property-based and fuzz tests: arbitrary malformed input is an ``RlnormError`` subclass
with a message, in under a second, never another exception; a mutated checkpoint is a
``CheckpointError`` or a correct load, never a silent wrong load.

Inputs tried per run (hypothesis, derandomized so that every run tries the same ones; the
counts are the ``max_examples`` below and are quoted in ``docs/reliability.md``):

- config files: 150 arbitrary texts over YAML's special characters, 100 structured configs
  (known and unknown keys, values of every JSON type, huge integers, NaN, long strings);
- ``--set`` overrides: 150 arbitrary ``key=value`` texts, 100 built from real keys;
- checkpoint metadata: 200 arbitrary JSON documents parsed as meta.json, 75 real
  meta.json files with one value replaced or removed, each loaded;
- checkpoint files: 120 real checkpoints mutated by truncation, bit flips or edits of the
  safetensors header, with and without their checksum fixed, each loaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlnorm
from rlnorm import agents, config
from rlnorm.errors import CheckpointError, RlnormError
from rlnorm.meta import CheckpointMeta

FUZZ = settings(
    deadline=1000,  # milliseconds: every example must finish in under a second
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PPO = agents.get("ppo")
TABLE_ROW = re.compile(r"^\|.*\| (\d+) \| `(test_\w+)` \|$", re.MULTILINE)
TRAIN_KEYS = [f.name for f in fields(config.TrainConfig)]
AGENT_KEYS = [f.name for f in fields(PPO.Config)]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def refused_or_ok(call: Callable[[], Any]) -> Any:
    """Run ``call``; an RlnormError must carry a message, any other exception fails."""
    try:
        return call()
    except RlnormError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return None


@pytest.fixture(scope="module")
def scratch() -> Any:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def resolve_file(scratch: Path, text: str) -> Any:
    path = scratch / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return refused_or_ok(lambda: config.resolve(PPO, "CartPole-v1", config_file=path))


# --------------------------------------------------------------------------- config loader


@settings(FUZZ, max_examples=150)
@given(st.text(alphabet=st.sampled_from(list("[]{}:,&*!-|>'\"#%@? \n\tax0.e+")), max_size=200))
def test_arbitrary_config_text_is_a_config_error_or_a_config(scratch: Path, text: str) -> None:
    resolve_file(scratch, text)


sections = st.fixed_dictionaries(
    {},
    optional={
        "norm": st.sampled_from(["batch", "layer", "none", "BatchNorm"]) | json_values,
        "train": st.dictionaries(st.sampled_from([*TRAIN_KEYS, "bogus"]), json_values)
        | json_values,
        "agent": st.dictionaries(st.sampled_from([*AGENT_KEYS, "bogus"]), json_values)
        | json_values,
        "extra": json_values,
    },
)


@settings(FUZZ, max_examples=100)
@given(sections)
def test_structured_configs_are_a_config_error_or_a_config(scratch: Path, data: dict) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    cfg = resolve_file(scratch, text)
    if cfg is not None:  # what was accepted is within its ranges and round-trips
        assert 0 < cfg.train.total_steps <= config.MAX_STEPS
        assert config.from_dict(cfg.to_dict(), agents.get) == cfg


# --------------------------------------------------------------------------- --set parsing


@settings(FUZZ, max_examples=150)
@given(st.text(max_size=120))
def test_arbitrary_overrides_are_a_config_error_or_a_config(text: str) -> None:
    refused_or_ok(lambda: config.resolve(PPO, "CartPole-v1", overrides=[text]))


@settings(FUZZ, max_examples=100)
@given(
    st.sampled_from([*(f"train.{k}" for k in TRAIN_KEYS), *(f"agent.{k}" for k in AGENT_KEYS)])
    | st.text(max_size=12),
    st.text(alphabet=st.sampled_from(list("[]{}:,&*!-.e0123456789 naifty'\"")), max_size=40)
    | json_values.map(lambda v: json.dumps(v, allow_nan=True)),
)
def test_overrides_of_real_keys_are_a_config_error_or_a_config(key: str, value: str) -> None:
    refused_or_ok(lambda: config.resolve(PPO, "CartPole-v1", overrides=[f"{key}={value}"]))


# --------------------------------------------------------------------------- metadata


@settings(FUZZ, max_examples=200)
@given(json_values | st.dictionaries(st.sampled_from(["agent", "counters", "extra"]), json_values))
def test_arbitrary_metadata_is_a_checkpoint_error_or_parsed(data: Any) -> None:
    try:
        CheckpointMeta.parse(data, "meta.json")
    except CheckpointError as e:
        assert str(e).strip()


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint of a trained BatchNorm PPO agent (Adam state, running statistics,
    a run config and learner state in ``extra``)."""
    from test_checkpoint import make_agent, train_a_little

    agent = make_agent("batch", epochs=1)
    train_a_little(agent, updates=1)
    run = config.resolve(PPO, "CartPole-v1", norm="batch").to_dict()
    return rlnorm.save(
        agent,
        tmp_path_factory.mktemp("fuzz") / "ckpt",
        env_id="CartPole-v1",
        counters={"env_steps": 128, "updates": 1},
        extra={
            "run_config": run,
            "learner": {"best_mean": 9.5, "next_eval": 256, "next_checkpoint": None},
            "eval": {"mean": 9.5},
        },
    )


def paths_of(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a JSON document."""
    out = [prefix] if prefix else []
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, child in children:
        out += paths_of(child, (*prefix, key))
    return out


def state_of(agent: Any) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value
        for name, module in agent.modules().items()
        for key, value in module.state_dict().items()
    }


def fresh_copy(original: Path, scratch: Path) -> Path:
    target = scratch / "ckpt"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(original, target)
    return target


@settings(FUZZ, max_examples=75)
@given(st.data())
def test_metadata_with_a_value_replaced_loads_correctly_or_is_refused(
    original: Path, scratch: Path, data: st.DataObject
) -> None:
    meta = json.loads((original / "meta.json").read_text())
    where = data.draw(st.sampled_from([p for p in paths_of(meta) if p[0] != "sha256"]))
    edited = copy.deepcopy(meta)
    parent = edited
    for key in where[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(json_values)
    path = fresh_copy(original, scratch)
    (path / "meta.json").write_text(json.dumps(edited))
    agent = refused_or_ok(lambda: rlnorm.load(path))
    if agent is not None:  # a load is the original's weights, bit for bit
        reference = safetensors.torch.load_file(original / "weights.safetensors")
        for key, value in state_of(agent).items():
            assert value.dtype == reference[key].dtype and torch.equal(value, reference[key])


# --------------------------------------------------------------------------- checkpoint files


def edit_header(blob: bytes, data: st.DataObject) -> bytes:
    """``blob`` (a safetensors file) with one entry of its JSON header edited."""
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + size])
    name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    entry = header[name]
    what = data.draw(st.sampled_from(["dtype", "shape", "offsets", "size", "junk"]))
    if what == "dtype":
        entry["dtype"] = data.draw(
            st.sampled_from(["F16", "F64", "BF16", "I32", "I64", "BOOL", "U8"])
        )
    elif what == "shape":
        entry["shape"] = data.draw(st.lists(st.integers(0, 300), max_size=3))
    elif what == "offsets":
        shift = data.draw(st.integers(-64, 64))
        entry["data_offsets"] = [max(0, o + shift) for o in entry["data_offsets"]]
    elif what == "size":
        return struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1))) + blob[8:]
    else:
        header["__metadata__"] = {"x": data.draw(st.text(max_size=20))}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + size :]


def mutate(blob: bytes, data: st.DataObject, header: bool) -> bytes:
    kind = data.draw(
        st.sampled_from(["truncate", "flip", "header"] if header else ["truncate", "flip"])
    )
    if kind == "truncate":
        return blob[: data.draw(st.integers(0, len(blob)))]
    if kind == "flip":
        out = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 8))):
            out[data.draw(st.integers(0, len(out) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(out)
    return edit_header(blob, data)


@settings(FUZZ, max_examples=120)
@given(st.data())
def test_mutated_checkpoints_are_refused_or_load_exactly_what_they_hold(
    original: Path, scratch: Path, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(["weights.safetensors", "optimizer.safetensors", "meta.json"]))
    fix = name != "meta.json" and data.draw(st.booleans())  # a crafted file: checksum redone
    path = fresh_copy(original, scratch)
    blob = (path / name).read_bytes()
    mutated = mutate(blob, data, header=name != "meta.json")
    (path / name).write_bytes(mutated)
    if fix:
        meta = json.loads((path / "meta.json").read_text())
        meta["sha256"][name] = hashlib.sha256(mutated).hexdigest()
        (path / "meta.json").write_text(json.dumps(meta))
    try:
        agent = rlnorm.load(path)
    except CheckpointError as e:
        assert str(e).strip()
        return
    # Loaded: the mutation changed nothing, or a crafted file is loaded exactly as it says
    # (same dtypes, same values, all finite), never cast or coerced into something else.
    assert fix or mutated == blob or name == "meta.json"
    weights = safetensors.torch.load_file(path / "weights.safetensors")
    for key, value in state_of(agent).items():
        assert value.dtype == weights[key].dtype and torch.equal(value, weights[key]), key
        assert not value.is_floating_point() or bool(torch.isfinite(value).all())


def test_the_reliability_table_is_current() -> None:
    """docs/reliability.md names every test of this file and of test_reliability.py, and no
    other, and quotes each property-based test's number of inputs as its max_examples."""
    import test_reliability

    page = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    rows = {name: int(count) for count, name in TABLE_ROW.findall(page)}
    here = sys.modules[__name__]
    tests = {
        name
        for module in (here, test_reliability)
        for name in dir(module)
        if name.startswith("test_") and callable(getattr(module, name))
    } - {"test_the_reliability_table_is_current"}
    assert set(rows) == tests
    for name, count in rows.items():
        inner = getattr(getattr(here, name, None), "hypothesis", None)
        if inner is not None:
            assert getattr(here, name)._hypothesis_internal_use_settings.max_examples == count
