"""Checkpoints without pickle and without a mode.

A checkpoint is a directory::

    weights.safetensors    every parameter and buffer of every agent module (running
                           statistics included), keyed "<module>.<state-dict key>"
    optimizer.safetensors  every optimizer's tensor state, keyed "<optimizer>.<param>.<key>"
    training_state.safetensors
                           optional: what resuming the run needs beyond the agent (RNG
                           states, env state, replay buffer), written by the learner
    meta.json              format, agent, norm, env id, spaces, full config, step counts,
                           optimizer hyperparameters, library versions, file checksums

It records no train/eval flag: :func:`load` returns an agent with every module in eval mode,
so a checkpoint saved mid-update cannot reload into acting on batch statistics. It is
written into a temporary sibling directory and renamed into place, so a crash leaves either
the previous checkpoint or the new one, never half of one. Loading reads JSON and
safetensors only: a file that is not such a checkpoint is refused before any of it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import safetensors
import safetensors.torch
import torch

from rlnorm.agent import Agent, AgentLookup
from rlnorm.bounded import describe
from rlnorm.config import build_config
from rlnorm.env import space_shape
from rlnorm.errors import CheckpointError, RlnormError
from rlnorm.meta import MAX_META_BYTES, CheckpointMeta, decode_json, space_from_json, space_to_json
from rlnorm.normalize import ObservationNormalizer
from rlnorm.version import __version__

FORMAT = "rlnorm-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAINING_STATE = "training_state.safetensors"
META = "meta.json"
OBS_NORMALIZER = "obs_normalizer"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _modules(agent: Agent) -> dict[str, torch.nn.Module]:
    """The agent's modules, plus its observation normalizer when it has one."""
    modules = dict(agent.modules())
    normalizer = getattr(agent, "obs_normalizer", None)
    if normalizer is not None:
        modules[OBS_NORMALIZER] = normalizer
    return modules


def _weights(agent: Agent) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage, and views are not contiguous.
    return {
        f"{name}.{key}": value.detach().cpu().clone().contiguous()
        for name, module in _modules(agent).items()
        for key, value in module.state_dict().items()
    }


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    safetensors.torch.save_file(
        {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, path
    )


def _optimizer_state(agent: Agent) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    groups: dict[str, Any] = {}
    for name, opt in agent.optimizers().items():
        state = opt.state_dict()
        for param_id, param_state in state["state"].items():
            for key, value in param_state.items():
                value = torch.as_tensor(value)
                tensors[f"{name}.{param_id}.{key}"] = value.detach().cpu().clone().contiguous()
        groups[name] = state["param_groups"]
    return tensors, groups


def save(
    agent: Agent,
    path: str | os.PathLike[str],
    *,
    env_id: str,
    counters: dict[str, int] | None = None,
    extra: dict[str, Any] | None = None,
    training_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``agent`` to the checkpoint directory ``path`` atomically; returns the path.

    ``counters`` records progress (env steps, updates); ``extra`` any JSON-able metadata
    (the run's resolved config, the last evaluation); ``training_state`` the tensors a
    resumed run needs beyond the agent (read back by :func:`load_training_state`).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _recover_interrupted_swap(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from e
    try:
        safetensors.torch.save_file(_weights(agent), tmp / WEIGHTS)
        opt_tensors, opt_groups = _optimizer_state(agent)
        safetensors.torch.save_file(opt_tensors, tmp / OPTIMIZER)
        files = [WEIGHTS, OPTIMIZER]
        if training_state is not None:
            _save_tensors(training_state, tmp / TRAINING_STATE)
            files.append(TRAINING_STATE)
        normalizer = getattr(agent, "obs_normalizer", None)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "agent": agent.name,
            "norm": agent.norm,
            "env_id": env_id,
            "observation_space": space_to_json(agent.observation_space),
            "action_space": space_to_json(agent.action_space),
            "agent_config": asdict(agent.config),
            "counters": dict(counters or {}),
            "optimizer_param_groups": opt_groups,
            "obs_normalizer": (
                None if normalizer is None else {"clip": normalizer.clip, "eps": normalizer.eps}
            ),
            "extra": dict(extra or {}),
            "versions": {
                "rlnorm": __version__,
                "torch": torch.__version__,
                "gymnasium": gym.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "sha256": {name: _sha256(tmp / name) for name in files},
        }
        (tmp / META).write_text(json.dumps(meta, indent=2, default=_json_default))
        # Modes as the umask says, like any file the user writes: mkdtemp's 0700 and
        # safetensors' 0600 would make a checkpoint private while its meta.json is not.
        umask = _umask()
        os.chmod(tmp, 0o777 & ~umask)
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        # Swap in the new checkpoint: the old one is moved aside first, so at every instant
        # one complete checkpoint exists under `path` or its backup name.
        backup = path.with_name(f".{path.name}.old")
        if backup.exists():
            shutil.rmtree(backup)
        if path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
        if backup.exists():
            shutil.rmtree(backup)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _recover_interrupted_swap(path)
        if isinstance(e, OSError):  # a full disk, a read-only or vanished directory
            raise CheckpointError(
                f"cannot write checkpoint {path}: {e.strerror or e}; the previous checkpoint "
                "there, if any, is untouched"
            ) from e
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _recover_interrupted_swap(path: Path) -> None:
    """Put the previous checkpoint back if a save died between moving it aside and moving
    the new one in (an exception, SIGKILL or power loss between the two renames)."""
    backup = path.with_name(f".{path.name}.old")
    if backup.exists() and not path.exists():
        os.replace(backup, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, torch.Tensor | np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in meta.json")


def read_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """Validate that ``path`` is an rlnorm checkpoint directory (its files present and
    matching their checksums) and return its parsed, validated metadata."""
    path = Path(path)
    _recover_interrupted_swap(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        what = (
            "a pickle file"
            if head[:1] == b"\x80"
            else "a zip archive (torch.save or stable-baselines3 format)"
            if head == b"PK\x03\x04"
            else "a file"
        )
        raise CheckpointError(
            f"{path} is {what}, not an rlnorm checkpoint directory; rlnorm never unpickles, "
            f"a checkpoint is a directory holding {WEIGHTS} and {META}"
        )
    for name in (META, WEIGHTS, OPTIMIZER):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: not an rlnorm checkpoint, {name} is missing")
    try:
        with open(path / META, "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)
        text = raw.decode()
    except OSError as e:
        raise CheckpointError(f"{path / META}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path / META}: not valid JSON (not UTF-8 text)") from None
    data = decode_json(text, str(path / META))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path / META}: not an rlnorm checkpoint (format is not {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {describe(data.get('format_version'))}, "
            f"this rlnorm reads version {FORMAT_VERSION}"
        )
    meta = CheckpointMeta.parse(data, str(path / META))
    # Every data file is checked; a checksum table naming other files is itself corrupt.
    listed = set(meta.sha256)
    if listed not in ({WEIGHTS, OPTIMIZER}, {WEIGHTS, OPTIMIZER, TRAINING_STATE}):
        raise CheckpointError(
            f"{path / META}: 'sha256' must list {WEIGHTS} and {OPTIMIZER} (and optionally "
            f"{TRAINING_STATE}), got {describe(sorted(meta.sha256))}"
        )
    for name in sorted(listed):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: {name} is listed in meta.json but missing")
        if _sha256(path / name) != meta.sha256[name]:
            raise CheckpointError(
                f"{path / name} is corrupted or truncated: its checksum does not match meta.json"
            )
    return meta


def _load_tensors(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path, device=str(device))
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None


def load(
    path: str | os.PathLike[str],
    agent_class: AgentLookup,
    device: torch.device | str = "cpu",
    *,
    agent: str | None = None,
    norm: str | None = None,
    allow_non_finite: bool = False,
) -> Agent:
    """Rebuild the agent saved at ``path``, every module in eval mode, optimizers restored.

    ``agent_class`` finds the agent class by the name the checkpoint records; the public
    :func:`rlnorm.load` passes the agent registry, ``rlnorm.agents.get``.

    ``agent`` and ``norm``, when given, must match the checkpoint's; a mismatch (or a
    checkpoint whose tensors do not fit the agent it names) raises :class:`CheckpointError`.
    Every tensor must have the dtype and shape of the agent's own (``load_state_dict``
    would silently cast a float16 or bool tensor) and, unless ``allow_non_finite`` (the
    audit, which reports them), hold no NaN or inf; the error names the tensor.
    """
    path = Path(path)
    meta = read_meta(path)
    for asked, key in ((agent, "agent"), (norm, "norm")):
        if asked is not None and asked != getattr(meta, key):
            raise CheckpointError(f"{path} holds a {key} {getattr(meta, key)!r}, not {asked!r}")
    try:
        cls = agent_class(meta.agent)
        obj = cls(
            meta.observation_space,
            meta.action_space,
            build_config(cls, meta.agent_config),
            meta.norm,
            device,
        )
        if meta.obs_normalizer is not None:
            clip, eps = meta.obs_normalizer
            obj.obs_normalizer = ObservationNormalizer(
                space_shape(obj.observation_space), clip=clip, eps=eps
            ).to(obj.device)
        if meta.run is not None and "agent_config" in meta.run.config:
            build_config(cls, meta.run.config["agent_config"])
    except (RlnormError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot rebuild its agent from meta.json: {e}") from None

    weights = _load_tensors(path / WEIGHTS, obj.device)
    modules = _modules(obj)
    own = {f"{n}.{k}": v for n, m in modules.items() for k, v in m.state_dict().items()}
    if set(weights) != set(own):
        missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        raise CheckpointError(
            f"{path}: weights do not fit a {meta.agent} agent with norm {meta.norm!r} "
            f"(missing {missing[:5]}, unexpected {describe(unexpected[:5], 200)})"
        )
    for key, value in weights.items():
        _check_tensor(path / WEIGHTS, key, value, own[key], finite=not allow_non_finite)
    for name, module in modules.items():
        prefix = f"{name}."
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights of {name!r} do not fit: {e}") from None
        module.eval()
    _load_optimizers(path, meta, obj, finite=not allow_non_finite)
    obj.counters = dict(meta.counters)
    return obj


def _check_tensor(
    where: Path,
    key: str,
    value: torch.Tensor,
    like: torch.Tensor | None = None,
    *,
    finite: bool = True,
) -> None:
    """Refuse a tensor of another dtype or shape than ``like`` (the agent's own: loading
    would silently cast it) or, when ``finite``, one holding NaN/inf, naming it."""
    if like is not None and (value.dtype != like.dtype or value.shape != like.shape):
        raise CheckpointError(
            f"{where}: tensor {key!r} is {value.dtype} {tuple(value.shape)}, the agent's is "
            f"{like.dtype} {tuple(like.shape)}"
        )
    floating = value.dtype.is_floating_point or value.dtype.is_complex
    if finite and floating and not bool(torch.isfinite(value).all()):
        raise CheckpointError(f"{where}: tensor {key!r} holds NaN or inf values")


def _same_kind(saved: Any, own: Any) -> bool:
    """Whether a saved optimizer hyperparameter can stand for the optimizer's own value."""
    if own is None or isinstance(own, bool):  # torch's optional flags (foreach, fused, ...)
        return saved is None or isinstance(saved, bool)
    if isinstance(own, int | float):
        return isinstance(saved, int | float) and not isinstance(saved, bool)
    if isinstance(own, tuple | list):
        return isinstance(saved, list) and len(saved) == len(own)
    return type(saved) is type(own)


def _load_optimizers(path: Path, meta: CheckpointMeta, agent: Agent, *, finite: bool) -> None:
    """Restore each optimizer: its param groups must have the keys, parameters and kinds of
    values of the agent's own, its state tensors must belong to its parameters, with their
    shape and dtype, and be finite."""
    opt_tensors = _load_tensors(path / OPTIMIZER, agent.device)
    optimizers = agent.optimizers()
    for key in opt_tensors:
        name, _, rest = key.partition(".")
        param_id, _, field = rest.partition(".")
        if name not in optimizers or not param_id.isdecimal() or not field:
            raise CheckpointError(f"{path / OPTIMIZER}: unexpected tensor {describe(key)}")
    for name, opt in optimizers.items():
        groups = meta.optimizer_param_groups.get(name)
        own_groups = opt.state_dict()["param_groups"]
        if groups is None:
            raise CheckpointError(f"{path}: no state for optimizer {name!r}")
        if len(groups) != len(own_groups):
            raise CheckpointError(f"{path}: optimizer {name!r} has {len(groups)} param groups")
        params: dict[int, torch.Tensor] = {}
        for i, (group, own) in enumerate(zip(groups, own_groups, strict=True)):
            where = f"{path / META}: optimizer_param_groups.{name}[{i}]"
            if set(group) != set(own) or group["params"] != own["params"]:
                raise CheckpointError(f"{where}: its keys or parameters are not the optimizer's")
            for k, v in group.items():
                if not _same_kind(v, own[k]):
                    raise CheckpointError(
                        f"{where}.{k}: {describe(v)} cannot stand for {describe(own[k])}"
                    )
            for param_id, param in zip(own["params"], opt.param_groups[i]["params"], strict=True):
                params[param_id] = param
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in opt_tensors.items():
            opt_name, param_id, field = key.split(".", 2)
            if opt_name != name:
                continue
            param = params.get(int(param_id))
            if param is None:
                raise CheckpointError(f"{path / OPTIMIZER}: {key!r} names no parameter of {name}")
            like = param if value.dim() else None
            _check_tensor(path / OPTIMIZER, key, value, like, finite=finite)
            opt_state.setdefault(int(param_id), {})[field] = value
        try:
            opt.load_state_dict({"state": opt_state, "param_groups": groups})
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: optimizer {name!r} state does not fit: {e}") from None


def load_training_state(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The training state saved with the checkpoint at ``path`` (empty if it has none)."""
    path = Path(path)
    meta = read_meta(path)
    if TRAINING_STATE not in meta.sha256:
        return {}
    tensors = _load_tensors(path / TRAINING_STATE, torch.device(device))
    for key, value in tensors.items():
        _check_tensor(path / TRAINING_STATE, key, value)
    # Cloned: tensors straight from a safetensors file can sit at addresses that are not
    # 64-byte aligned, and CPU kernels then round differently in the last bit, which would
    # make a resumed run drift from an uninterrupted one.
    return {k: v.clone() for k, v in tensors.items()}


__all__ = ["load", "load_training_state", "read_meta", "save", "space_from_json", "space_to_json"]
