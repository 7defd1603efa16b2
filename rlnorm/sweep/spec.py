"""A sweep's SPEC file: the fixed arguments of ``rlnorm train``, a grid and/or a list of
trials, and the resources each trial needs; expanded into named trials.

::

    train: {agent: ppo, env: CartPole-v1, steps: 8192, train.eval_episodes: 10}
    grid: {norm: [none, batch], seed: [0, 1, 2]}
    trials:                       # optional: explicit configurations, each crossed with the grid
      - {agent.lr: 3.0e-4}
      - {agent.lr: 1.0e-3, agent.clip_range: 0.1}
    resources: {num_cpus: 1, num_gpus: 0.25}   # per trial, for --backend ray

A key is an argument of ``rlnorm train`` (:data:`TRAIN_KEYS`) or, when it has a dot, a
config key given to ``--set`` (``agent.lr``, ``train.num_envs``). With only a grid the
trials are its product; with only ``trials``, the list; with both, every entry of the list
crossed with the grid's product. Every problem found is a :class:`SpecError` naming the file
and the line, raised before anything runs.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlnorm.errors import RlnormError, UnknownNameError

#: Arguments of ``rlnorm train`` a SPEC may fix or vary, with the type each takes. The run
#: directory, ``--resume``, ``--threads`` and ``--quiet`` belong to the sweep.
TRAIN_KEYS: dict[str, type] = {
    "agent": str,
    "env": str,
    "norm": str,
    "seed": int,
    "steps": int,
    "device": str,
    "backend": str,
    "config": str,
    "nan_policy": str,
    "deterministic": bool,
}
TOP_KEYS = ("train", "grid", "trials", "resources")
RESOURCE_KEYS = ("num_cpus", "num_gpus")
_CHOICES = {"backend": ("auto", "native", "gymnasium"), "nan_policy": ("raise", "warn")}
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


class SpecError(RlnormError, ValueError):
    """A SPEC file is malformed; the message names the file and the line."""


@dataclass(frozen=True)
class Trial:
    """One run of the sweep: ``values`` are its grid/list values (what names it), ``args``
    the whole set of ``rlnorm train`` arguments (the fixed ones and ``values``)."""

    name: str
    values: dict[str, Any]
    args: dict[str, Any]
    origin: dict[str, tuple[Any, ...]] = field(default_factory=dict, compare=False, repr=False)

    def train_argv(self, run_dir: Path, threads: int) -> list[str]:
        """The ``rlnorm train`` arguments of a fresh run of this trial in ``run_dir``."""
        argv = ["train", "--run-dir", str(run_dir), "--quiet", "--threads", str(threads)]
        for key, value in self.args.items():
            if "." in key:
                argv += ["--set", f"{key}={json.dumps(value)}"]
            elif key == "deterministic":
                argv += ["--deterministic"] if value else []
            else:
                argv += [f"--{key.replace('_', '-')}", str(value)]
        return argv

    def resume_argv(self, run_dir: Path, threads: int) -> list[str]:
        """The ``rlnorm train --resume`` arguments that continue this trial in ``run_dir``."""
        argv = ["train", "--resume", str(run_dir), "--quiet", "--threads", str(threads)]
        if "device" in self.args:
            argv += ["--device", str(self.args["device"])]
        return argv


@dataclass
class Spec:
    """A parsed and checked SPEC: ``path``/``text`` as read, ``train`` the fixed arguments,
    ``resources`` per trial, ``trials`` in the order they run."""

    path: Path
    text: str
    train: dict[str, Any]
    resources: dict[str, float] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict, repr=False)

    def where(self, *path: Any) -> str:
        """``"SPEC.yaml, line N"`` for the entry at ``path`` (or its nearest parent)."""
        while path and path not in self.lines:
            path = path[:-1]
        return f"{self.path}, line {self.lines.get(path, 1)}"


def load(path: str | Path) -> Spec:
    """Read, check and expand the SPEC at ``path``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"cannot read the sweep spec {path}: {e.strerror or e}") from None
    return parse(text, path)


def parse(text: str, path: Path = Path("SPEC")) -> Spec:
    """Check and expand a SPEC given as text; ``path`` names it in messages and anchors a
    relative ``config:`` path."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}{line}: malformed YAML: {problem}") from None
    spec = Spec(path, text, {}, lines=_lines(node, path) if node is not None else {})
    if not isinstance(data, dict):
        raise SpecError(f"{path}, line 1: a sweep spec is a mapping with the keys train, grid")
    for key in data:
        if key not in TOP_KEYS:
            raise SpecError(f"{spec.where(key)}: {UnknownNameError('spec key', key, TOP_KEYS)}")
    spec.train = _arguments(spec, ("train",), data.get("train") or {})
    spec.resources = _resources(spec, data.get("resources") or {})
    grid = _grid(spec, data.get("grid"))
    entries = _entries(spec, data.get("trials"))
    if not grid and not entries:
        raise SpecError(f"{path}, line 1: nothing to run: give a grid or a list of trials")
    spec.trials = _expand(spec, grid, entries)
    return spec


def _lines(node: yaml.Node, source: Path, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """The line (1-based) where each entry of the YAML document starts, keyed by its path;
    a key given twice in one mapping (YAML would silently keep the last) is an error."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            at = (*path, key.value)
            if at in lines:
                raise SpecError(
                    f"{source}, line {key.start_mark.line + 1}: {key.value} is given twice "
                    f"(first at line {lines[at]})"
                )
            lines.update(_lines(value, source, at))
            lines[at] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            lines.update(_lines(value, source, (*path, index)))
    return lines


def _arguments(spec: Spec, at: tuple[Any, ...], values: Any) -> dict[str, Any]:
    """A mapping of train arguments and dotted config keys, each key and value checked."""
    if not isinstance(values, dict):
        raise SpecError(f"{spec.where(*at)}: {at[-1]} must be a mapping of train arguments")
    for key, value in values.items():
        _check_argument(spec, (*at, key), key, value)
    if "config" in values:
        config = Path(values["config"])
        values["config"] = str(config if config.is_absolute() else spec.path.parent / config)
    return dict(values)


def _check_argument(spec: Spec, at: tuple[Any, ...], key: Any, value: Any) -> None:
    where = spec.where(*at)
    if not isinstance(key, str):
        raise SpecError(f"{where}: a key must be a name, got {key!r}")
    if "." in key:
        if value is None or isinstance(value, dict):
            raise SpecError(f"{where}: {key} needs a value (a number, string, bool or list)")
        return
    if key not in TRAIN_KEYS:
        err = UnknownNameError("train argument", key, TRAIN_KEYS)
        raise SpecError(f"{where}: {err} (or a dotted config key such as agent.lr)")
    expected = TRAIN_KEYS[key]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise SpecError(f"{where}: {key} must be a {expected.__name__}, got {value!r}")
    if key == "steps" and isinstance(value, int) and value < 1:
        raise SpecError(f"{where}: steps must be a positive integer, got {value}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise SpecError(f"{where}: {key} must be one of {', '.join(_CHOICES[key])}, got {value!r}")


def _resources(spec: Spec, values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        raise SpecError(f"{spec.where('resources')}: resources must be a mapping")
    for key, value in values.items():
        where = spec.where("resources", key)
        if key not in RESOURCE_KEYS:
            raise SpecError(f"{where}: {UnknownNameError('resource', key, RESOURCE_KEYS)}")
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise SpecError(f"{where}: {key} must be a number >= 0, got {value!r}")
    if values.get("num_cpus", 1) < 1:
        raise SpecError(f"{spec.where('resources', 'num_cpus')}: num_cpus must be >= 1")
    return dict(values)


def _grid(spec: Spec, grid: Any) -> dict[str, list[Any]]:
    if grid is None:
        return {}
    if not isinstance(grid, dict) or not grid:
        raise SpecError(f"{spec.where('grid')}: empty grid: give each varied key a list")
    for key, values in grid.items():
        where = spec.where("grid", key)
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}: grid.{key} must be a non-empty list, got {values!r}")
        if key in spec.train:
            raise SpecError(
                f"{where}: {key} is both fixed ({spec.where('train', key)}) and varied here"
            )
        seen: dict[str, int] = {}
        for index, value in enumerate(values):
            _check_argument(spec, ("grid", key, index), key, value)
            label = json.dumps(value, sort_keys=True)
            if label in seen:
                first = spec.where("grid", key, seen[label]).rpartition(" ")[2]
                raise SpecError(
                    f"{spec.where('grid', key, index)}: grid.{key} lists {value!r} twice "
                    f"(first at line {first}); each trial must be distinct"
                )
            seen[label] = index
    return grid


def _entries(spec: Spec, entries: Any) -> list[dict[str, Any]]:
    if entries is None:
        return []
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{spec.where('trials')}: trials must be a non-empty list of mappings")
    checked = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry:
            raise SpecError(f"{spec.where('trials', index)}: a trial must be a non-empty mapping")
        for key in entry:
            if key in spec.train:
                raise SpecError(
                    f"{spec.where('trials', index, key)}: {key} is both fixed "
                    f"({spec.where('train', key)}) and varied here"
                )
        checked.append(_arguments(spec, ("trials", index), entry))
    return checked


def _expand(spec: Spec, grid: dict[str, list[Any]], entries: list[dict[str, Any]]) -> list[Trial]:
    """Every entry (or one empty entry) crossed with the grid's product, named and checked
    for duplicates."""
    for index, entry in enumerate(entries):
        for key in entry:
            if key in grid:
                raise SpecError(
                    f"{spec.where('trials', index, key)}: {key} is also a grid key "
                    f"({spec.where('grid', key)}); vary it in one place"
                )
    trials: list[Trial] = []
    names: dict[str, int] = {}
    fixed = {key: ("train", key) for key in spec.train}
    combos = [
        {
            key: (value, ("grid", key, grid[key].index(value)))
            for key, value in zip(grid, row, strict=True)
        }
        for row in itertools.product(*grid.values())
    ]
    for index, entry in enumerate(entries or [{}]):
        for combo in combos or [{}]:
            values = {**entry, **{key: value for key, (value, _) in combo.items()}}
            origin = {**fixed, **{key: ("trials", index, key) for key in entry}}
            origin |= {key: at for key, (_, at) in combo.items()}
            name = trial_name(values)
            if name in names:
                raise SpecError(
                    f"{spec.where('trials', index)}: this trial ({name}) is already in the sweep; "
                    "each trial must be distinct"
                )
            names[name] = index
            trials.append(Trial(name, values, {**spec.train, **values}, origin))
    return trials


def check_configs(spec: Spec) -> None:
    """Resolve each distinct configuration of the sweep as ``rlnorm train`` will (agent, env,
    norm, config file, ``--set`` keys), so that a bad value stops the sweep before any trial
    runs, with the line of the SPEC that set it."""
    from rlnorm import agents, config, envs

    checked: set[str] = set()
    made: set[tuple[str, str]] = set()
    for trial in spec.trials:
        args = trial.args
        identity = json.dumps({k: v for k, v in args.items() if k != "seed"}, sort_keys=True)
        if identity in checked:
            continue
        checked.add(identity)
        env_id, backend = args.get("env", "CartPole-v1"), args.get("backend", "auto")
        try:
            if (env_id, backend) not in made:
                envs.make(env_id, num_envs=1, backend=backend).close()
                made.add((env_id, backend))
            config.resolve(
                agents.get(args.get("agent", "ppo")),
                env_id,
                norm=args.get("norm"),
                config_file=args.get("config"),
                overrides=[f"{k}={json.dumps(v)}" for k, v in args.items() if "." in k],
                total_steps=args.get("steps"),
            )
        except RlnormError as e:
            raise SpecError(f"{_blame(spec, trial, str(e))}: trial {trial.name}: {e}") from None


def _blame(spec: Spec, trial: Trial, message: str) -> str:
    """Where in the SPEC the key that ``message`` complains about was set: a config key the
    message begins with, else an argument whose value it quotes, else ``train``."""
    subject = message.split(":")[0]
    dotted = [
        k for k in trial.args if "." in k and (k in subject or k.rpartition(".")[2] in subject)
    ]
    quoted = [k for k, v in trial.args.items() if isinstance(v, str) and repr(v) in message]
    for key in [*dotted, *quoted]:
        return spec.where(*trial.origin.get(key, ("train",)))
    return spec.where("train")


def trial_name(values: Mapping[str, Any]) -> str:
    """A trial's directory name from its grid values: ``norm=batch__seed=0``. Characters a
    path should not hold become ``-``."""
    parts = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(_UNSAFE.sub("-", f"{key}={text}"))
    return "__".join(parts)
