"""A checkpoint's ``meta.json`` as typed dataclasses, parsed and validated when it is read.

Every field a reader acts on (step counters, seeds, sizes, optimizer hyperparameters,
spaces) is checked here, once, so that a hand-edited or hostile ``meta.json`` is a
:class:`rlnorm.errors.CheckpointError` naming the key, never a traceback, an allocator
error or a run that crashes later at ``--resume``. What needs the agent class (its Config,
its optimizers) is checked by :func:`rlnorm.checkpoint.load`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from rlnorm.bounded import MAX_DEPTH, MAX_INT, depth_exceeds, describe
from rlnorm.config import MAX_SEED, TrainConfig, build_dataclass
from rlnorm.errors import CheckpointError, ConfigError

#: The largest meta.json read, in bytes (a Box space of a million entries fits).
MAX_META_BYTES = 64 << 20
#: The most entries a recorded space may have, and the largest Discrete ``n``.
MAX_SPACE_SIZE = 1 << 24
#: The dtypes a recorded Box space may have.
BOX_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def space_to_json(space: gym.spaces.Space) -> dict[str, Any]:
    """A JSON description of a Box or Discrete space, exact enough to rebuild it."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": space.low.tolist(),
            "high": space.high.tolist(),
        }
    raise CheckpointError(f"cannot record space {space!r}: only Box and Discrete are supported")


def space_from_json(desc: Any, where: str = "space") -> gym.spaces.Space:
    """Inverse of :func:`space_to_json`; a malformed description is a CheckpointError."""
    if not isinstance(desc, dict):
        raise CheckpointError(f"{where}: expected a space description, got {describe(desc)}")
    if desc.get("type") == "Discrete":
        n = _int(desc.get("n"), f"{where}.n", low=1, high=MAX_SPACE_SIZE)
        start = _int(desc.get("start", 0), f"{where}.start", low=-MAX_INT, high=MAX_INT)
        return gym.spaces.Discrete(n, start=start)
    if desc.get("type") == "Box":
        shape = desc.get("shape")
        if not isinstance(shape, list) or len(shape) > 8:
            raise CheckpointError(f"{where}.shape: expected a list of sizes, got {describe(shape)}")
        dims = tuple(_int(d, f"{where}.shape", low=0, high=MAX_SPACE_SIZE) for d in shape)
        if math.prod(dims) > MAX_SPACE_SIZE:
            raise CheckpointError(f"{where}.shape: {dims} has more than {MAX_SPACE_SIZE} entries")
        if desc.get("dtype") not in BOX_DTYPES:
            raise CheckpointError(
                f"{where}.dtype: {describe(desc.get('dtype'))} is not one of "
                f"{', '.join(BOX_DTYPES)}"
            )
        dtype = np.dtype(desc["dtype"])
        bounds = []
        for key in ("low", "high"):
            try:
                array = np.asarray(desc.get(key), dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                raise CheckpointError(f"{where}.{key}: not an array of numbers") from None
            if array.shape != dims or np.isnan(array).any():
                raise CheckpointError(f"{where}.{key}: expected {dims} numbers (no NaN)")
            bounds.append(array.astype(dtype))
        if (bounds[0] > bounds[1]).any():
            raise CheckpointError(f"{where}: low exceeds high")
        return gym.spaces.Box(bounds[0], bounds[1], shape=dims, dtype=dtype)
    raise CheckpointError(f"{where}: unknown space description {describe(desc)}")


def _int(value: Any, where: str, *, low: int = 0, high: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CheckpointError(
            f"{where}: expected an integer in [{low}, {high}], got {describe(value)}"
        )
    return value


def _float(value: Any, where: str, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CheckpointError(f"{where}: expected a number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise CheckpointError(f"{where}: {describe(value)} is too large") from None
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise CheckpointError(f"{where}: expected a finite number, got {number!r}")
    return number


def _optional_int(value: Any, where: str) -> int | None:
    return None if value is None else _int(value, where)


def _dict(value: Any, where: str, *, optional: bool = False) -> dict[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: expected a mapping, got {describe(value)}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise CheckpointError(f"{where}: expected a name, got {describe(value)}")
    return value


def _hyperparameter(value: Any, where: str) -> Any:
    """An optimizer hyperparameter as JSON may hold it: a finite number, a flag, a name, or
    a short list of finite numbers (Adam's betas). Its kind is checked against the agent's
    own optimizer at load time."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _int(value, where, low=-MAX_INT) if isinstance(value, int) else _float(value, where)
    if isinstance(value, str) and len(value) <= 100:
        return value
    if isinstance(value, list) and len(value) <= 8:
        return [_float(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CheckpointError(f"{where}: expected a number, flag or short list, got {describe(value)}")


def _param_groups(value: Any, where: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, group_list in _dict(value, where).items():
        if not isinstance(group_list, list) or not group_list or len(group_list) > 64:
            raise CheckpointError(f"{where}.{name}: expected a list of param groups")
        parsed = []
        for i, group in enumerate(group_list):
            here = f"{where}.{name}[{i}]"
            group = _dict(group, here)
            params = group.get("params")
            if not isinstance(params, list) or len(set(map(repr, params))) != len(params):
                raise CheckpointError(f"{here}.params: expected a list of distinct parameter ids")
            checked = {"params": [_int(p, f"{here}.params") for p in params]}
            for key, hyper in group.items():
                if key != "params":
                    checked[key] = _hyperparameter(hyper, f"{here}.{key}")
            parsed.append(checked)
        groups[name] = parsed
    return groups


@dataclass(frozen=True)
class LearnerMeta:
    """Where the learner stood: the best evaluation so far and when the next are due."""

    best_mean: float
    next_eval: int | None
    next_checkpoint: int | None


@dataclass(frozen=True)
class RunMeta:
    """The run a checkpoint belongs to: the values ``rlnorm eval`` and ``--resume`` use,
    each checked when present (the learner records them all; ``--resume`` rebuilds the
    whole ``config`` through :func:`rlnorm.config.from_dict`)."""

    seed: int
    backend: str
    train: TrainConfig
    config: dict[str, Any]


@dataclass(frozen=True)
class CheckpointMeta:
    """The parsed ``meta.json`` of a checkpoint; :meth:`parse` validates every field."""

    agent: str
    norm: str
    env_id: str
    observation_space: gym.spaces.Space
    action_space: gym.spaces.Space
    agent_config: dict[str, Any]
    optimizer_param_groups: dict[str, list[dict[str, Any]]]
    sha256: dict[str, str]
    counters: dict[str, int] = field(default_factory=dict)
    obs_normalizer: tuple[float, float] | None = None  # (clip, eps)
    extra: dict[str, Any] = field(default_factory=dict)
    run: RunMeta | None = None
    learner: LearnerMeta | None = None
    eval_mean: float | None = None  # the evaluation a best/ checkpoint was saved for

    @classmethod
    def parse(cls, data: Any, where: str) -> CheckpointMeta:
        """Validate the decoded JSON ``data``; raise CheckpointError naming the bad key."""
        data = _dict(data, where)
        extra = _dict(data.get("extra"), f"{where}: extra", optional=True)
        sha = _dict(data.get("sha256"), f"{where}: sha256")
        if not all(isinstance(v, str) and _SHA256.fullmatch(v) for v in sha.values()):
            raise CheckpointError(f"{where}: sha256 values must be hex SHA-256 digests")
        counters = {
            _str(k, f"{where}: counters"): _int(v, f"{where}: counters.{k}")
            for k, v in _dict(data.get("counters"), f"{where}: counters", optional=True).items()
        }
        normalizer = data.get("obs_normalizer")
        if normalizer is not None:
            normalizer = _dict(normalizer, f"{where}: obs_normalizer")
            clip = _float(normalizer.get("clip"), f"{where}: obs_normalizer.clip")
            eps = _float(normalizer.get("eps"), f"{where}: obs_normalizer.eps")
            if clip <= 0 or eps <= 0:
                raise CheckpointError(f"{where}: obs_normalizer clip and eps must be > 0")
            normalizer = (clip, eps)
        return cls(
            agent=_str(data.get("agent"), f"{where}: agent"),
            norm=_str(data.get("norm"), f"{where}: norm"),
            env_id=_str(data.get("env_id"), f"{where}: env_id"),
            observation_space=space_from_json(
                data.get("observation_space"), f"{where}: observation_space"
            ),
            action_space=space_from_json(data.get("action_space"), f"{where}: action_space"),
            agent_config=_dict(data.get("agent_config"), f"{where}: agent_config"),
            optimizer_param_groups=_param_groups(
                data.get("optimizer_param_groups"), f"{where}: optimizer_param_groups"
            ),
            sha256=sha,
            counters=counters,
            obs_normalizer=normalizer,
            extra=extra,
            run=_run(extra.get("run_config"), f"{where}: extra.run_config"),
            learner=_learner(extra.get("learner"), f"{where}: extra.learner"),
            eval_mean=_eval_mean(extra.get("eval"), f"{where}: extra.eval"),
        )


def decode_json(text: str, where: str) -> Any:
    """The JSON ``text`` (named ``where`` in errors) decoded, bounded in size and depth; any
    failure is a CheckpointError."""
    if len(text) > MAX_META_BYTES:
        raise CheckpointError(f"{where}: larger than {MAX_META_BYTES} bytes")
    try:
        data = json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{where}: nested too deeply to be rlnorm's") from None
    except ValueError as e:  # JSONDecodeError, or an integer over Python's digit limit
        raise CheckpointError(f"{where}: not valid JSON ({describe(str(e), 120)})") from None
    if depth_exceeds(data, MAX_DEPTH):
        raise CheckpointError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    return data


def _run(value: Any, where: str) -> RunMeta | None:
    if value is None:
        return None
    value = _dict(value, where)
    seed = _int(value.get("seed", 0), f"{where}.seed", high=MAX_SEED)
    if "agent_config" in value:
        _dict(value["agent_config"], f"{where}.agent_config")
    backend = value.get("backend", "auto")
    if backend not in ("auto", "native", "gymnasium"):
        raise CheckpointError(
            f"{where}.backend: {describe(backend)} is not auto, native, gymnasium"
        )
    try:
        train = build_dataclass(
            TrainConfig, value.get("train"), section=f"{where}.train", what="train config key"
        )
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    return RunMeta(seed=seed, backend=backend, train=train, config=value)


def _learner(value: Any, where: str) -> LearnerMeta | None:
    if value is None:
        return None
    value = _dict(value, where)
    return LearnerMeta(
        best_mean=_float(value.get("best_mean"), f"{where}.best_mean", allow_inf=True),
        next_eval=_optional_int(value.get("next_eval"), f"{where}.next_eval"),
        next_checkpoint=_optional_int(value.get("next_checkpoint"), f"{where}.next_checkpoint"),
    )


def _eval_mean(value: Any, where: str) -> float | None:
    if value is None:
        return None
    return _float(_dict(value, where).get("mean"), f"{where}.mean")


__all__ = [
    "CheckpointMeta",
    "LearnerMeta",
    "RunMeta",
    "decode_json",
    "space_from_json",
    "space_to_json",
]
