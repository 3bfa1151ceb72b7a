"""The configurations a study or search can build, and the preflight of their pretrained weights.

Before the first unit, ``study`` and ``tune`` check on disk (``fer.weights.resolver``: no network,
milliseconds) that every checkpoint any of their configurations reads is on this machine. A
missing one stops the command with exit 2 and one message naming each missing checkpoint and the
``python runner.py weights fetch ...`` command that downloads them: no ledger trial is claimed, no
MLflow run is started, the hub is never asked. ``weights list`` and ``weights fetch`` read the
same configurations, so the command the message names fetches exactly what was missing.

    check_weights([c.config for c in cells], cache_dir, preset="rtx3050", study="fusion-depth")
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer.config import ConfigError, resolve_config

if TYPE_CHECKING:
    from fer.config import RunConfig


def check_weights(configs: Sequence[RunConfig], cache_dir: str | Path, *, preset: str, study: str,
                  assignments: Sequence[str] = ()) -> None:
    """Stop when a checkpoint any of ``configs`` reads is not on this machine.

    Args:
        configs: every configuration the study or search can train.
        cache_dir: the project's cache (converted checkpoints under ``weights/``).
        preset, study, assignments: what the fetch command in the message repeats
            (``--preset``, ``--study``, each ``--set`` as typed).
    Raises:
        MissingWeightsError: each missing checkpoint, and the fetch command.
    """
    from fer.weights.resolver import MissingWeightsError, missing_checkpoints

    missing = missing_checkpoints(configs, cache_dir)
    if missing:
        raise MissingWeightsError(missing, preset=preset, study=study, assignments=assignments)


def search_points(space: dict) -> list[dict[str, Any]]:
    """The points of a search space that can differ in what they read from disk.

    A checkpoint is read or not depending on names and switches (modality, ``fusion.init``,
    a ``pretrained`` id: categorical choices) and on whether a count is zero (``fusion.layers``:
    an int). So every combination of the categorical choices and of both ends of each int range
    is a point; a float never names or switches a checkpoint and keeps its base value.
    """
    values: dict[str, list[Any]] = {}
    for path, p in space.items():
        if p.type == "categorical":
            values[path] = list(p.choices)
        elif p.type == "int":
            low, high, step = int(p.low), int(p.high), int(p.step or 1)
            values[path] = sorted({low, low + (high - low) // step * step})  # the last value suggest_int can give
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


def search_configs(ablations, name: str, *, preset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> list[RunConfig]:
    """The configurations of search ``name`` at each of its ``search_points``.

    A point whose configuration does not resolve is left out: its trial fails by itself.

    Raises:
        StudyError: unknown search.
        ConfigError: the base (preset, declared and command-line overrides) does not resolve.
    """
    spec = ablations.search(name)
    base = {**ablations.defaults.overrides, **spec.overrides, **(overrides or {})}
    preset = preset or ablations.defaults.preset
    configs = [resolve_config(preset, base)]
    for point in search_points(spec.space):
        try:
            configs.append(resolve_config(preset, {**base, **point}))
        except ConfigError:
            continue
    return configs


def configs_of(ablations, *, preset: str | None = None, study: str | None = None,
               overrides: dict[str, Any] | None = None) -> list[RunConfig]:
    """What ``weights list`` and ``weights fetch`` look at: a preset's configuration (the declared
    defaults' overrides, then ``overrides``), or every cell of a study, or the points of a search.

    Raises:
        StudyError: ``study`` is neither a declared study nor a search.
        ConfigError: a preset, override or axis value that does not resolve.
    """
    from studies.grid import expand_cells
    from studies.options import StudyError

    if study is None:
        return [resolve_config(preset or ablations.defaults.preset,
                               {**ablations.defaults.overrides, **(overrides or {})})]
    if study in ablations.studies:
        cells = expand_cells(ablations.study(study), ablations.defaults, preset=preset, overrides=overrides)
        return [c.config for c in cells]
    if study in ablations.searches:
        return search_configs(ablations, study, preset=preset, overrides=overrides)
    raise StudyError(f"{study!r} is neither a declared study nor a search (studies: "
                     f"{', '.join(sorted(ablations.studies))}; searches: {', '.join(sorted(ablations.searches))})")
