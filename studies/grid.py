"""A declared study -> cells (one per point of the grid) -> units (cell x fold x seed).

Axes form a cartesian product, except axes listed together in a ``zip`` group, which vary in
lockstep. A cell's name is a stable short string made of its axis values
(``layers=2``, ``freeze=lora,init=random``), used as the MLflow ``cell`` tag and in reports.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from fer.config import ConfigError, RunConfig, config_hash, resolve_config


@dataclass(frozen=True)
class Cell:
    name: str
    axes: dict[str, Any]
    config: RunConfig = field(compare=False)


@dataclass(frozen=True)
class Unit:
    """One training run of the study: a cell on one fold with one seed."""

    study: str
    cell: Cell
    fold: int
    seed: int
    key: str  # hash of resolved config, fold, seed and data manifest

    @property
    def label(self) -> str:
        return f"{self.cell.name}/fold{self.fold}/seed{self.seed}"


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _short_keys(paths: list[str]) -> list[str]:
    """The shortest trailing part of each dotted path that no other path ends with."""
    keys = []
    for path in paths:
        parts = path.split(".")
        for n in range(1, len(parts) + 1):
            key = ".".join(parts[-n:])
            if not any(o != path and (o == key or o.endswith("." + key)) for o in paths):
                break
        keys.append(key)
    return keys


def cell_name(axes: dict[str, Any]) -> str:
    """``{"model.fusion.layers": 2}`` -> ``"layers=2"``; longer suffixes only where needed."""
    return ",".join(f"{k}={_fmt(v)}" for k, v in zip(_short_keys(list(axes)), axes.values()))


def axis_points(axes: dict[str, list[Any]], zips: list[list[str]]) -> list[dict[str, Any]]:
    """Every grid point as ``{path: value}``, in declaration order (first axis slowest)."""
    zipped = {p for group in zips for p in group}
    blocks: list[list[dict[str, Any]]] = []
    seen_groups: set[int] = set()
    for path in axes:
        if path not in zipped:
            blocks.append([{path: v} for v in axes[path]])
            continue
        gi = next(i for i, g in enumerate(zips) if path in g)
        if gi in seen_groups:
            continue
        seen_groups.add(gi)
        group = [p for p in axes if p in zips[gi]]
        blocks.append([dict(zip(group, vals)) for vals in zip(*(axes[p] for p in group))])
    return [dict(kv for d in combo for kv in d.items()) for combo in itertools.product(*blocks)]


def override_clashes(overrides, varied, what: str) -> list[tuple[str, str]]:
    """Overridden paths that would set what a grid or a search varies, one error per path.

    An axis value is applied after the overrides, so an override of the same path, or of a
    section holding it (``model.fusion={layers: 3}`` against ``model.fusion.layers``), would be
    silently replaced in every cell; one below an axis path would be merged into each value.

    Args:
        overrides: dotted paths set from the command line.
        varied: dotted paths of the study's axes or the search's space.
        what: how to name a varied path in the message (``"an axis of this study"``).
    """
    errors = []
    for path in overrides:
        hit = [v for v in varied if v == path or v.startswith(path + ".") or path.startswith(v + ".")]
        if hit == [path]:
            errors.append((path, f"is {what}; it cannot also be overridden"))
        elif hit:
            errors.append((path, f"overlaps {', '.join(hit)}, {what}; it cannot also be overridden"))
    return errors


def expand_cells(spec, defaults, *, preset: str | None = None,
                 overrides: dict[str, Any] | None = None) -> list[Cell]:
    """Resolve every cell's full config.

    Precedence: preset < defaults.overrides < study overrides < CLI overrides < axis values;
    a CLI override may not touch an axis (see ``override_clashes``).

    Raises:
        ConfigError: every bad axis path or value and every override of an axis, with the path.
    """
    base = {**defaults.overrides, **spec.overrides, **(overrides or {})}
    errors = override_clashes(overrides or {}, spec.axes, "an axis of this study")
    cells = []
    for point in axis_points(spec.axes, spec.zip):
        try:
            cfg = resolve_config(preset or defaults.preset, {**base, **point})
        except ConfigError as exc:
            errors.extend(e for e in exc.errors if e not in errors)
            continue
        cells.append(Cell(cell_name(point), point, cfg))
    if errors:
        raise ConfigError(errors)
    return cells


def resolve_folds(folds, protocol: str | None, dataset: str = "ravdess") -> list[int]:
    """``"all"`` -> every fold index of the dataset's protocol; a list is checked against it."""
    from fer.data.datasets import get_dataset

    n = get_dataset(dataset).fold_count(protocol)  # the names only, no data read
    wanted = list(range(n)) if folds == "all" else list(folds)
    bad = [f for f in wanted if not 0 <= f < n]
    if bad:
        raise ConfigError([("folds", f"{bad} out of range: protocol {protocol!r} has folds 0..{n - 1}")])
    return wanted


def unit_key(cfg: RunConfig, fold: int, seed: int, data_manifest: str, max_epochs: int | None = None) -> str:
    """What a unit's result depends on: config, fold, seed, data, and an epoch cap that cuts training."""
    where = {"fold": fold, "seed": seed, "data": data_manifest}
    if max_epochs is not None and max_epochs < cfg.train.epochs:  # a cap at or above the epochs changes nothing
        where["max_epochs"] = max_epochs
    return config_hash(cfg, where)


def study_units(study: str, cells: list[Cell], folds: list[int], seeds: list[int],
                data_manifest: str, max_epochs: int | None = None) -> list[Unit]:
    """Cells x folds x seeds, cell-major so a cell's folds finish close together."""
    return [
        Unit(study, cell, fold, seed, unit_key(cell.config, fold, seed, data_manifest, max_epochs))
        for cell in cells
        for fold in folds
        for seed in seeds
    ]
