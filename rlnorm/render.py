"""Save one evaluation episode of an agent as an animated GIF.

Native torch envs do not draw themselves; since they reproduce gymnasium's dynamics
exactly, an episode is rendered by acting (in eval mode, through :func:`rlnorm.predict`)
on gymnasium's own single env of the same id, created with ``render_mode="rgb_array"``.
Classic-control renderers need ``pygame`` (the ``render`` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlnorm.agent import Agent
from rlnorm.errors import EnvError
from rlnorm.rollout import predict


def render_episode(
    agent: Agent,
    env_id: str,
    path: str | os.PathLike[str],
    seed: int = 0,
    fps: int = 30,
    max_frames: int = 2000,
) -> int:
    """Run one deterministic episode of ``agent`` on ``env_id`` and write it to ``path`` as
    a GIF; returns the number of frames."""
    from PIL import Image

    # pygame draws off-screen here; without these SDL complains about a missing display.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        env = gym.make(env_id, render_mode="rgb_array")
    except gym.error.DependencyNotInstalled as e:
        raise EnvError(
            f"rendering {env_id} needs an optional dependency: {e} (pip install 'rlnorm[render]')"
        ) from None
    try:
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
        done = False
        while not done and len(frames) < max_frames:
            action = predict(agent, np.asarray(obs, dtype=np.float32))
            if isinstance(env.action_space, gym.spaces.Discrete):
                action = int(action)
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(env.render())
            done = terminated or truncated
    except gym.error.DependencyNotInstalled as e:
        raise EnvError(
            f"rendering {env_id} needs an optional dependency: {e} (pip install 'rlnorm[render]')"
        ) from None
    finally:
        env.close()
    images = _palette_images(frames) or [Image.fromarray(np.asarray(f)) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
    )
    return len(images)


def _palette_images(frames: list[Any]) -> list[Any] | None:
    """The frames as palette images sharing one exact palette, when the whole episode uses
    at most 256 colours (classic control does); ``None`` otherwise. Writing these is several
    times faster than letting PIL quantize every RGB frame on its own, and loses nothing."""
    from PIL import Image

    packed = [_packed_rgb(np.asarray(f)) for f in frames]
    if any(p is None for p in packed):
        return None
    seen = np.zeros(1 << 24, dtype=bool)
    for p in packed:
        seen[p] = True
    colors = np.flatnonzero(seen)
    if len(colors) > 256:
        return None
    index = np.zeros(1 << 24, dtype=np.uint8)
    index[colors] = np.arange(len(colors), dtype=np.uint8)
    palette = np.stack([colors >> 16, (colors >> 8) & 255, colors & 255], axis=1).astype(np.uint8)
    images = []
    for p in packed:
        image = Image.fromarray(index[p])
        image.putpalette(palette.tobytes())
        images.append(image)
    return images


def _packed_rgb(frame: np.ndarray) -> np.ndarray | None:
    """An ``(H, W, 3)`` uint8 frame as ``(H, W)`` ints ``r << 16 | g << 8 | b``."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        return None
    rgb = frame.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
