"""The names of every ``norm/`` metric, one name for one quantity whichever agent logs it.

``docs/metrics.md`` is their table (meaning, who logs it, when) with the names they
replaced. A per-layer value is the aggregate's name, ``/``, and the layer's path
(``norm/drift/mean/actor.body.1``).
"""

from __future__ import annotations

import torch

#: acting modules, train- vs eval-mode output (relative RMS): every agent, from the learner
GAP_OUTPUT = "norm/gap/output"
#: KL(train-mode policy || eval-mode policy) on PPO's first minibatch
GAP_POLICY_KL = "norm/gap/policy_kl"
#: the critic's train- vs eval-mode output (relative RMS) on its training inputs: off-policy
GAP_CRITIC = "norm/gap/critic"
#: running vs last-batch statistics over all layers, mean shift and log-variance ratio
DRIFT_MEAN = "norm/drift/mean"
DRIFT_LOG_VAR = "norm/drift/log_var"
#: the same over the critic's layers only, at the off-policy agents' own cadence
DRIFT_CRITIC_MEAN = "norm/drift/critic/mean"
DRIFT_CRITIC_LOG_VAR = "norm/drift/critic/log_var"
#: the largest distance between the statistics of streams reaching one layer
STREAM_GAP = "norm/stream_gap"
#: PPO's importance ratio on its first minibatch, before any gradient step
PPO_FIRST_RATIO = "norm/ppo/first_minibatch_ratio"
PPO_FIRST_CLIP_FRACTION = "norm/ppo/first_minibatch_clip_fraction"
PPO_FIRST_RATIO_DEVIATION = "norm/ppo/first_minibatch_ratio_deviation"  # mean |ratio - 1|
PPO_FIRST_MAX_RATIO_DEVIATION = "norm/ppo/first_minibatch_max_ratio_deviation"


def per_layer(name: str, path: str) -> str:
    """The metric ``name`` of one layer: ``per_layer(DRIFT_MEAN, "actor.body.1")``."""
    return f"{name}/{path}"


def as_floats(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Tensors to floats with one device synchronization."""
    if not values:
        return {}
    flat = torch.stack([v.reshape(()) for v in values.values()])  # all 0-d, one device
    return dict(zip(values, flat.tolist(), strict=True))
