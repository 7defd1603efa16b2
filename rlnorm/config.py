"""Run configuration: YAML files shipped with the package, user files, and overrides.

A config file has three top-level keys, each optional::

    norm: batch            # the normalization when --norm is not given
    train: {...}           # TrainConfig fields: budget, envs, evaluation
    agent: {...}           # the agent's Config dataclass fields

``configs/<agent>/<env-id>.yaml`` is used when it exists, else ``configs/<agent>/default.yaml``.
Files are read with a bounded ``yaml.SafeLoader``: a config cannot construct Python objects
or run code, and hostile input is refused in bounded time (at most ``MAX_CONFIG_BYTES``, no
aliases, so no "billion laughs" expansion, nesting at most ``MAX_DEPTH`` deep). Every key is
checked: an unknown key names the valid ones; numbers are finite and within int64, layer
widths at most ``MAX_WIDTH``, seeds in ``[0, MAX_SEED]``.
"""

from __future__ import annotations

import argparse
import math
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rlnorm.bounded import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_INT, describe, load_yaml
from rlnorm.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:  # for hints only: the agent contract imports torch, which `rlnorm list` avoids
    from rlnorm.agent import Agent, AgentLookup

#: The widest hidden layer a tuple of layer widths may ask for.
MAX_WIDTH = 1 << 16
#: The largest run seed: offsets (evaluation, sub-env index) stay inside int64 and numpy's
#: seed range.
MAX_SEED = 2**62


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` as an int in ``[0, MAX_SEED]``, or ConfigError naming ``what``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{what} must be an integer in [0, 2**62], got {describe(seed)}")
    return seed


def build_config(cls: type[Agent], values: Mapping[str, Any] | None = None) -> Any:
    """Instantiate ``cls.Config`` from a mapping, checking each key and each value's type.

    An unknown key names the valid ones (with a did-you-mean); a value whose type does not
    match the field's default names the key, the value and the expected type.
    """
    return build_dataclass(cls.Config, values, section="agent", what=f"{cls.name} config key")


def build_dataclass(
    datacls: type, values: Mapping[str, Any] | None, *, section: str, what: str
) -> Any:
    """Instantiate the config dataclass ``datacls`` from a mapping of the ``section`` of a
    config file, type-checking each value against its field's default."""
    defaults = {f.name: f.default for f in fields(datacls)}
    checked: dict[str, Any] = {}
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{section}: expected a mapping of keys, got {describe(values)}")
    for key, value in dict(values or {}).items():
        if not isinstance(key, str):
            raise ConfigError(f"{section}: keys must be names, got {describe(key)}")
        if key not in defaults:
            err = UnknownNameError(what, key if len(key) <= 100 else describe(key), defaults)
            raise ConfigError(f"{section}.{key}: {err}") from None
        checked[key] = _coerce(f"{section}.{key}", value, defaults[key])
    return datacls(**checked)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default``, or a ConfigError saying why not."""
    value = _coerce_type(key, value, default)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{key}: {describe(value)} is out of range (at most 2**63 - 1)")
    if isinstance(value, str) and len(value) > 1000:
        raise ConfigError(f"{key}: {describe(value)} is too long (at most 1000 characters)")
    if isinstance(value, tuple):
        if len(value) > MAX_DEPTH:
            raise ConfigError(f"{key}: at most {MAX_DEPTH} entries, got {len(value)}")
        for entry in value:
            if not isinstance(entry, int | float | str | bool):
                raise ConfigError(f"{key}: entries must be numbers, got {describe(entry)}")
            _coerce(key, entry, entry)
    return value


def _coerce_type(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default``, or a ConfigError saying why not."""
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{key}: {describe(value)} is too large for a float") from None
    if expected is float and isinstance(value, str) and len(value) <= 100:
        # YAML 1.1 reads "3e-4" (no dot) as a string; accept any float literal Python accepts.
        try:
            return float(value)
        except ValueError:
            pass
    if expected is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{key}: expected {expected.__name__} (like the default {describe(default)}), "
        f"got {type(value).__name__} {describe(value)}"
    )


def check_ranges(
    config: Any,
    *,
    section: str = "agent",
    choices: Mapping[str, tuple[str, ...]] = {},
    positive: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
    unit_interval: tuple[str, ...] = (),
    at_most: Mapping[str, int] = {},
) -> None:
    """Raise :class:`ConfigError` naming the first field of ``config`` out of its range.

    For an agent Config's ``__post_init__``: ``choices`` maps a field to its valid strings,
    ``positive`` fields must be > 0, ``non_negative`` >= 0, ``unit_interval`` in [0, 1],
    ``at_most`` fields at most their bound (sizes that allocate memory). A tuple field (layer
    widths) must hold integers, each at most ``MAX_WIDTH``. ``section`` prefixes the key in
    messages (the config file's top-level key).
    """
    for key, valid in choices.items():
        if getattr(config, key) not in valid:
            raise ConfigError(
                f"{section}.{key}: {describe(getattr(config, key))} is not one of "
                f"{', '.join(valid)}"
            )
    bounds: list[tuple[str, str, Callable[[Any], bool]]]
    bounds = [(k, "> 0", lambda v: v > 0) for k in positive]
    bounds += [(k, ">= 0", lambda v: v >= 0) for k in non_negative]
    bounds += [(k, "in [0, 1]", lambda v: 0 <= v <= 1) for k in unit_interval]
    bounds += [(k, f"<= {m}", partial(operator.ge, m)) for k, m in at_most.items()]
    for key, text, ok in bounds:
        value = getattr(config, key)
        if isinstance(value, tuple):
            if not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and ok(v) and v <= MAX_WIDTH
                for v in value
            ):
                raise ConfigError(
                    f"{section}.{key}: every entry must be an integer {text} and at most "
                    f"{MAX_WIDTH}, got {describe(list(value))}"
                )
        elif not ok(value):
            raise ConfigError(f"{section}.{key}: must be {text}, got {describe(value)}")


#: Bounds of the train sizes that allocate memory (sub-envs, episode slots, step counters).
MAX_ENVS = 1 << 20
MAX_EPISODES = 1 << 24
MAX_STEPS = 1 << 50


@dataclass
class TrainConfig:
    """What the learner does, independent of the algorithm."""

    total_steps: int = 100_000  # environment steps (steps x sub-envs, autoreset steps included)
    num_envs: int = 8
    eval_every: int = 20_000  # env steps between evaluations (0: only at the end)
    eval_episodes: int = 20  # episodes per periodic evaluation
    final_eval_episodes: int = 100  # episodes of the evaluation at the end
    eval_num_envs: int = 20  # sub-envs of the separate evaluation env
    checkpoint_every: int = 10_000  # env steps between resumable checkpoints (0: evaluations only)
    keep_checkpoints: int = 3  # periodic step-<n> checkpoints kept besides last/ and best/
    nan_policy: str = "raise"  # NaN/inf obs or reward: stop ("raise"), or "warn" and drop it
    normalize_obs: bool = False  # running mean/std observation normalization (VecNormalize)
    normalize_reward: bool = False  # scale rewards by the discounted return's running std
    reward_gamma: float = 0.99  # discount of the return that normalize_reward tracks
    norm_diagnostics_every: int = 4  # updates between norm/ diagnostics (< 5% of update time)
    log_every: int = 500  # env steps between TensorBoard writes of update means (0: each update)
    deterministic: bool = False  # torch's deterministic algorithms (CUDA; CPU already is)

    def __post_init__(self) -> None:
        check_ranges(
            self,
            section="train",
            choices={"nan_policy": ("raise", "warn")},
            positive=(
                "norm_diagnostics_every",
                "total_steps",
                "num_envs",
                "eval_episodes",
                "final_eval_episodes",
                "eval_num_envs",
            ),
            non_negative=("eval_every", "checkpoint_every", "keep_checkpoints", "log_every"),
            unit_interval=("reward_gamma",),
            # Sizes that allocate: one sub-env or episode slot each.
            at_most={
                "num_envs": MAX_ENVS,
                "eval_num_envs": MAX_ENVS,
                "eval_episodes": MAX_EPISODES,
                "final_eval_episodes": MAX_EPISODES,
                "total_steps": MAX_STEPS,
            },
        )


@dataclass
class RunConfig:
    """Everything that defines a run; written into the run directory as ``config.yaml``."""

    agent: str
    env: str
    norm: str
    seed: int = 0
    device: str = "cpu"
    train: TrainConfig = field(default_factory=TrainConfig)
    agent_config: Any = None
    backend: str = "auto"  # env backend: "auto", "native" or "gymnasium"

    @property
    def eval_seed(self) -> int:
        """The seed of this run's evaluation episodes (see :func:`eval_seed`)."""
        return eval_seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "env": self.env,
            "norm": self.norm,
            "seed": self.seed,
            "device": self.device,
            "backend": self.backend,
            "train": asdict(self.train),
            "agent_config": _plain(asdict(self.agent_config)),
        }


def eval_seed(run_seed: int) -> int:
    """The seed of a run's evaluation episodes: apart from its training seeds (which count up
    from ``run_seed``), and fixed, so ``rlnorm eval`` replays the run's own evaluation."""
    return run_seed + 1_000_003


def _plain(value: Any) -> Any:
    """Tuples to lists, so YAML and JSON dumps hold only plain types."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def packaged_config(agent: str, env_id: str) -> Path | None:
    """The shipped config for ``agent`` on ``env_id`` (or the agent's default), if any.

    An adapter name ``family:Algo`` (``sb3:PPO``) looks in ``configs/family/`` for
    ``Algo-<env-id>.yaml``, then ``Algo-default.yaml``.
    """
    family, _, algo = agent.partition(":")
    prefix = f"{algo}-" if algo else ""
    root = packaged_configs_dir() / family
    for name in (f"{prefix}{env_id}.yaml", f"{prefix}default.yaml"):
        if (root / name).is_file():
            return root / name
    return None


def packaged_config_names(agent: str) -> list[str]:
    """The env ids (and ``default``) ``agent`` has shipped configs for."""
    family, _, algo = agent.partition(":")
    prefix = f"{algo}-" if algo else ""
    folder = packaged_configs_dir() / family
    return sorted(p.stem.removeprefix(prefix) for p in folder.glob(f"{prefix}*.yaml"))


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a config file safely (:func:`load_yaml`); a syntax error names the file and line."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: {path.stat().st_size} bytes, more than a config may hold "
                f"({MAX_CONFIG_BYTES})"
            )
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (it is not valid UTF-8)") from None
    data = load_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def positive_int_argument(text: str) -> int:
    """An argparse ``type=`` for counts given on the command line (steps, episodes, seeds,
    workers): an integer >= 1, else argparse's usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"agent.lr=3e-4"`` -> ``(["agent", "lr"], 0.0003)``; the value is parsed as YAML
    (bounded as a config file is)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"override {describe(text)} is not of the form key=value (e.g. agent.lr=3e-4)"
        )
    try:
        value = load_yaml(raw, f"override {describe(text)}")
    except ConfigError as e:
        raise ConfigError(f"{e} (the value is parsed as YAML)") from None
    path = key.strip().split(".")
    if len(path) > MAX_DEPTH or not all(part.strip() for part in path):
        raise ConfigError(f"override {describe(text)}: the key must be dotted names, like agent.lr")
    return path, value


_TOP_KEYS = ("norm", "train", "agent")


def _merge(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def _check_section(name: str, values: Any) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{name}: expected a mapping of keys, got {type(values).__name__} {describe(values)}"
        )
    return values


def resolve(
    agent_cls: type[Agent],
    env_id: str,
    *,
    norm: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    total_steps: int | None = None,
) -> RunConfig:
    """Build the run's config for ``agent_cls`` (``rlnorm.agents.get(name)``): file (user's,
    else shipped) < overrides < explicit arguments."""
    from rlnorm import norm as norms

    agent = agent_cls.name
    check_seed(seed)
    source = config_file if config_file is not None else packaged_config(agent, env_id)
    data = read_yaml(source) if source is not None else {}
    for text in overrides:
        key, value = parse_override(text)
        _merge(data, key, value)
    for top_key in data:
        if top_key not in _TOP_KEYS:
            name = (
                top_key if isinstance(top_key, str) and len(top_key) <= 100 else describe(top_key)
            )
            err = UnknownNameError("top-level config key", name, _TOP_KEYS)
            raise ConfigError(f"{name}: {err}")
    train_values = _check_section("train", data.get("train"))
    if total_steps is not None:
        train_values["total_steps"] = total_steps
    chosen_norm = norm if norm is not None else data.get("norm", "none")
    if not isinstance(chosen_norm, str):
        raise ConfigError(f"norm: expected a name, got {describe(chosen_norm)}")
    norms.get(chosen_norm)
    return RunConfig(
        agent=agent,
        env=env_id,
        norm=chosen_norm,
        seed=seed,
        device=device,
        train=build_dataclass(TrainConfig, train_values, section="train", what="train config key"),
        agent_config=build_config(agent_cls, _check_section("agent", data.get("agent"))),
    )


def from_dict(data: Any, agent_class: AgentLookup) -> RunConfig:
    """Rebuild a :class:`RunConfig` from :meth:`RunConfig.to_dict` (a checkpoint's copy);
    ``agent_class`` finds the agent by its name (``rlnorm.agents.get``). Anything malformed
    is a :class:`ConfigError` naming the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a run config must be a mapping, got {describe(data)}")
    for key in ("agent", "env", "norm", "seed", "device", "train", "agent_config"):
        if key not in data:
            raise ConfigError(f"a run config needs the key {key!r}")
    for key in ("agent", "env", "norm", "device"):
        if not isinstance(data[key], str) or len(data[key]) > 1000:
            raise ConfigError(f"run config {key}: expected a name, got {describe(data[key])}")
    backend = data.get("backend", "auto")
    if backend not in ("auto", "native", "gymnasium"):
        raise ConfigError(f"run config backend: {describe(backend)} is not auto, native, gymnasium")
    cls = agent_class(data["agent"])
    return RunConfig(
        agent=data["agent"],
        env=data["env"],
        norm=data["norm"],
        seed=check_seed(data["seed"], "run config seed"),
        device=data["device"],
        backend=backend,
        train=build_dataclass(TrainConfig, data["train"], section="train", what="train config key"),
        agent_config=build_config(cls, data["agent_config"]),
    )


def packaged_configs_dir() -> Path:
    """The folder of shipped configs (``configs/`` in the repository)."""
    return Path(str(resources.files("rlnorm.configs")))


def dump(cfg: RunConfig) -> str:
    """The resolved config as YAML, loadable again with ``--config``."""
    d = cfg.to_dict()
    header = "".join(f"# {k}: {d[k]}\n" for k in ("agent", "env", "seed", "device", "backend"))
    body = {"norm": d["norm"], "train": d["train"], "agent": d["agent_config"]}
    return header + yaml.safe_dump(body, sort_keys=False)
