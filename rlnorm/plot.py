"""``rlnorm plot``: learning curves of groups of runs, drawn into a PNG.

Each run directory written by ``rlnorm train`` holds ``eval.jsonl`` (one JSON line per
evaluation: ``step``, ``mean``, ``std``, ...) and ``config.yaml`` (the resolved config; its
leading ``# agent: ...``, ``# env: ...``, ``# seed: ...`` comments name the run). Runs are
grouped by a config value (the norm by default); each group is drawn as the mean over its runs
of one evaluation field against environment steps, with the band between its best and its
worst run shaded, as in the figure of *On the Perils of Batch Norm*.

Runs of one group evaluated at different steps are put on one grid: the union of their
evaluation steps, restricted to the range every run covers (from the latest first evaluation
to the earliest last one), each run linearly interpolated between its two neighbouring
evaluations. Nothing is extrapolated, so every point of a curve averages the same runs; a
run that stopped early shortens its whole group's curve instead of making it jump. Runs of one
config evaluate at the same steps, and then the grid is exactly their evaluation steps.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rlnorm.config import read_yaml
from rlnorm.errors import ConfigError, RlnormError, UnknownNameError

# ``config.dump`` writes the run's identity (agent, env, seed, device) as comments above the
# YAML body; they are read back as top-level keys so that ``--group-by seed`` works too.
_HEADER_LINE = re.compile(r"#\s*([A-Za-z_]\w*)\s*:\s*(.*)")


@dataclass(frozen=True)
class Curve:
    """One run's evaluations: ``values[i]`` was measured at ``steps[i]`` (strictly increasing).

    ``source`` names where the curve came from, for error messages.
    """

    steps: np.ndarray
    values: np.ndarray
    source: str


@dataclass(frozen=True)
class GroupCurve:
    """A group's runs on one grid of steps: their mean, worst and best value at each step."""

    steps: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray
    runs: int


@dataclass(frozen=True)
class Run:
    """A run directory as the plot sees it.

    ``config`` is ``config.yaml``'s body plus its header keys (``env``, ``seed``, ``device``);
    the header's ``agent`` (the agent's name) is shadowed there by the body's ``agent``
    section, so it is kept apart as ``agent`` for the title.
    """

    path: Path
    config: dict[str, Any]
    agent: str | None
    curve: Curve


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (those holding ``eval.jsonl``) among ``paths`` or anywhere below them.

    A path that is itself a run is taken as it is; any other directory is searched
    recursively. A run reached twice (given directly and through its parent) counts once, so
    it cannot weigh double in a group's mean.
    """
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise RlnormError(f"{path}: no such file or directory")
        if not path.is_dir():
            raise RlnormError(
                f"{path}: not a directory (give run directories, which hold eval.jsonl, "
                "or folders that contain them)"
            )
        if (path / "eval.jsonl").is_file():
            runs = [path]
        else:
            runs = sorted(p.parent for p in path.rglob("eval.jsonl") if p.is_file())
        if not runs:
            raise RlnormError(f"{path}: no runs in it (no eval.jsonl in it or below it)")
        for run in runs:
            found.setdefault(run.resolve(), run)
    return list(found.values())


def read_curve(path: str | Path, metric: str = "mean") -> Curve:
    """The ``metric`` field of every line of an ``eval.jsonl`` file, against its ``step``.

    Strict, because a plot silently drawn from a half-written or concatenated file would
    mislead: every problem names the file and the line.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise RlnormError(f"cannot read {path}: {e.strerror}") from None
    steps: list[int] = []
    values: list[float] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise RlnormError(f"{where}: not valid JSON ({e.msg}): {line[:80]!r}") from None
        if not isinstance(record, dict):
            raise RlnormError(f"{where}: expected a JSON object, got {line[:80]!r}")
        for key in ("step", metric):
            if key not in record:
                raise RlnormError(
                    f"{where}: no {key!r} field (fields: {', '.join(sorted(record))})"
                )
        step, value = record["step"], record[metric]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise RlnormError(f"{where}: 'step' must be a non-negative integer, got {step!r}")
        if not _is_number(value) or not math.isfinite(value):
            raise RlnormError(f"{where}: {metric!r} must be a finite number, got {value!r}")
        if steps and step <= steps[-1]:
            raise RlnormError(
                f"{where}: step {step} does not come after the previous evaluation's step "
                f"{steps[-1]} (are two runs' evaluations in one file?)"
            )
        steps.append(step)
        values.append(float(value))
    if not steps:
        raise RlnormError(f"{path}: empty (the run recorded no evaluation)")
    return Curve(np.array(steps, dtype=np.int64), np.array(values), str(path))


def read_scalars(run_dir: str | Path, tag: str) -> Curve:
    """The TensorBoard scalar ``tag`` of a run (its ``tb/`` event files), against the step.

    A step logged twice (a resumed run re-logs the steps after its last checkpoint) keeps its
    last value. A missing tag is an error listing the run's tags.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = Path(run_dir) / "tb"
    if not tb.is_dir():
        raise RlnormError(f"{tb}: missing (every run directory rlnorm writes has one)")
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()["scalars"]
    if tag not in tags:
        raise RlnormError(f"{tb}: {UnknownNameError('TensorBoard scalar', tag, tags)}")
    by_step = {event.step: event.value for event in events.Scalars(tag)}
    steps = np.array(sorted(by_step), dtype=np.int64)
    return Curve(steps, np.array([by_step[k] for k in steps], dtype=float), f"{tb} ({tag})")


def read_header(path: str | Path) -> dict[str, Any]:
    """The ``# key: value`` comment lines at the top of a ``config.yaml``, values typed."""
    header: dict[str, Any] = {}
    for line in Path(path).read_text().splitlines():
        match = _HEADER_LINE.fullmatch(line.strip())
        if not match:
            break
        header[match[1]] = _yaml_scalar(match[2])
    return header


def load_run(run_dir: str | Path, metric: str = "mean") -> Run:
    """Read a run directory: its config and the curve of its ``metric``."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: missing (every run directory rlnorm writes has one)")
    body = read_yaml(config_path)  # first: an unreadable or malformed file names itself
    header = read_header(config_path)
    agent = header.get("agent")
    return Run(
        run_dir,
        {**header, **body},
        None if agent is None else str(agent),
        read_curve(run_dir / "eval.jsonl", metric),
    )


def config_value(config: Mapping[str, Any], key: str, source: str = "config") -> Any:
    """The value at a dotted ``key`` (``"agent.lr"``) of a config; ``source`` names it in errors.

    A missing key is an error that lists the keys of the section it was looked for in, and
    suggests the likeliest (``agent.learning_rate`` -> ``lr``); so is a key naming a section.
    """
    node: Any = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        section = ".".join(parts[:depth])
        if not isinstance(node, Mapping):
            raise ConfigError(
                f"{source}: {key!r}: {section!r} is a value ({node!r}), not a section"
            )
        if part not in node:
            err = UnknownNameError(f"{section} key" if section else "config key", part, node)
            raise ConfigError(f"{source}: {key!r}: {err}")
        node = node[part]
    if isinstance(node, Mapping):
        inner = ", ".join(f"{key}.{k}" for k in _leaf_keys(node))
        raise ConfigError(f"{source}: {key!r} is a section, not a value; its keys: {inner}")
    return node


def group_runs(runs: Sequence[Run], group_by: str = "norm") -> dict[str, list[Run]]:
    """Runs keyed by the label of their ``group_by`` config value, groups in sorted order.

    Numbers sort numerically (``1e-4`` before ``3e-4`` before ``1e-3``), anything else by its
    label; labels are the values as JSON writes them (``0.001``, ``true``, ``[64, 64]``).
    """
    groups: dict[str, list[Run]] = {}
    values: dict[str, Any] = {}
    for run in runs:
        value = config_value(run.config, group_by, str(run.path / "config.yaml"))
        label = value if isinstance(value, str) else json.dumps(value)
        groups.setdefault(label, []).append(run)
        values[label] = value
    numeric = all(_is_number(v) for v in values.values())
    order = sorted(groups, key=lambda label: values[label] if numeric else label)
    return {label: groups[label] for label in order}


def aggregate(groups: Mapping[str, Sequence[Curve]]) -> dict[str, GroupCurve]:
    """Each group's curves on one grid of steps, and their mean, min and max at every step.

    The grid is the union of the group's evaluation steps within the range all its curves
    cover; each curve is linearly interpolated onto it (see the module docstring for why).
    """
    result = {}
    for label, curves in groups.items():
        if not curves:
            raise RlnormError(f"group {label!r} has no runs")
        start = max(c.steps[0] for c in curves)
        stop = min(c.steps[-1] for c in curves)
        if start > stop:
            first = max(curves, key=lambda c: c.steps[0])
            last = min(curves, key=lambda c: c.steps[-1])
            raise RlnormError(
                f"group {label!r}: its runs share no range of steps: {last.source} ends at "
                f"step {stop}, before {first.source} begins at step {start}"
            )
        grid = np.unique(np.concatenate([c.steps for c in curves]))
        grid = grid[(grid >= start) & (grid <= stop)]
        values = np.stack([np.interp(grid, c.steps, c.values) for c in curves])
        result[label] = GroupCurve(
            grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0), len(curves)
        )
    return result


def plot_runs(
    run_dirs: Iterable[str | Path],
    out_path: str | Path,
    group_by: str = "norm",
    metric: str = "mean",
    title: str | None = None,
    allow_mixed_envs: bool = False,
    tags: Sequence[str] = (),
) -> Path:
    """Draw the learning curves of runs into a PNG at ``out_path``; returns that path.

    ``run_dirs`` are run directories or folders containing them (searched recursively);
    ``group_by`` is a dotted config key (``"norm"``, ``"agent.lr"``, ``"train.num_envs"``);
    ``metric`` is the ``eval.jsonl`` field plotted (``"mean"``: the mean evaluation return).
    Runs of different environments are refused unless ``allow_mixed_envs``: their returns are
    on different scales, so one figure of them is most likely a mistake. With ``tags``, the
    figure has one panel per TensorBoard scalar instead (``"norm/gap/policy_kl"``,
    ``"charts/episodic_return"``, ...), read from each run's ``tb/``, grouped the same way.
    """
    runs = [load_run(path, metric) for path in find_runs(run_dirs)]
    env_ids = _env_ids(runs, allow_mixed_envs)
    groups = group_runs(runs, group_by)
    if title is None:
        agent_names = sorted({r.agent for r in runs if r.agent is not None})
        on = f"{', '.join(agent_names)} on " if agent_names else ""
        title = f"{on}{', '.join(env_ids)}"
    if tags:
        panels = {
            tag: aggregate(
                {label: [read_scalars(r.path, tag) for r in runs] for label, runs in groups.items()}
            )
            for tag in tags
        }
    else:
        curves = {label: [r.curve for r in members] for label, members in groups.items()}
        panels = {f"evaluation return ({metric} over episodes)": aggregate(curves)}
    return _draw(panels, Path(out_path), group_by, title)


def _env_ids(runs: Sequence[Run], allow_mixed: bool) -> list[str]:
    """The env ids of ``runs``, sorted; more than one is an error unless ``allow_mixed``."""
    by_env: dict[str, list[Run]] = {}
    for run in runs:
        if "env" not in run.config:
            raise ConfigError(
                f"{run.path / 'config.yaml'}: does not name its environment (no '# env: ...' "
                "header line or 'env' key)"
            )
        by_env.setdefault(str(run.config["env"]), []).append(run)
    if len(by_env) > 1 and not allow_mixed:
        listing = "; ".join(
            f"{env}: {len(members)} run(s), e.g. {members[0].path}"
            for env, members in sorted(by_env.items())
        )
        raise RlnormError(
            f"the runs are of {len(by_env)} different environments ({listing}); plot them "
            "separately, or pass --allow-mixed-envs (allow_mixed_envs=True) to draw them together"
        )
    return sorted(by_env)


def _draw(
    panels: Mapping[str, Mapping[str, GroupCurve]], out_path: Path, group_by: str, title: str
) -> Path:
    """Render each panel's curves (keyed by the panel's y-axis label) side by side, two a
    row, with matplotlib's Agg canvas, and save them as a PNG.

    matplotlib is imported here, not at module level, so that every other ``rlnorm`` command
    starts without paying for it; the figure is built without pyplot, so no global backend
    is chosen and nothing needs a display.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    columns = min(2, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(7.5 * columns, 4.5 * rows), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax, (ylabel, curves) in zip(axes, panels.items(), strict=False):
        for label, curve in curves.items():
            marker = "o" if len(curve.steps) <= 60 else None
            (line,) = ax.plot(
                curve.steps,
                curve.mean,
                marker=marker,
                markersize=3,
                label=f"{label} (n={curve.runs})",
            )
            ax.fill_between(curve.steps, curve.min, curve.max, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(alpha=0.3)
        ax.legend(
            title=f"{group_by}  (line: mean over runs; band: min to max)",
            fontsize="small",
            title_fontsize="small",
        )
    for ax in axes[len(panels) :]:  # the empty cell of an odd number of panels
        ax.set_visible(False)
    fig.suptitle(title)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, format="png")
    return out_path


def _leaf_keys(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of a nested mapping that leads to a value, not a section."""
    keys = []
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            keys.extend(_leaf_keys(value, f"{dotted}."))
        else:
            keys.append(dotted)
    return keys


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _yaml_scalar(text: str) -> Any:
    """A header comment's value typed as YAML types it (``0`` -> 0), else the raw text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
