"""``rlnorm sweep``: grids of ordinary ``rlnorm train`` runs over seeds, norms, envs, agents
and any config key, on a local process pool or a Ray cluster, resumable, with ``rliable``
statistics (``rlnorm sweep report``). See ``docs/sweeps.md``.

The package sits on the top floor beside the CLI: a trial is a ``rlnorm train`` process, so
every trial's run directory is one ``rlnorm eval``, ``audit`` and ``plot`` read as any other.
"""

from rlnorm.sweep.command import add_parser, run
from rlnorm.sweep.spec import Spec, SpecError, Trial, load

__all__ = ["Spec", "SpecError", "Trial", "add_parser", "load", "run"]
