"""The schema of ``ablations.yaml``: declared studies, searches and paper tables.

Loading validates everything at once and reports each problem with its key path, e.g.
``studies.fusion-depth.axes.model.fusion.layerz: names no config field``. Nothing runs on a
bad file. Axis paths and search parameters are checked against the real ``RunConfig`` by
resolving every cell, so a typo in a dotted path cannot slip through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fer.config import ConfigError, validation_errors


class SpecError(ValueError):
    """An invalid ablations file; ``errors`` holds ``(key path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "ablations.yaml"):
        self.errors = errors
        self.source = source
        super().__init__("\n".join(f"{source}: {p}: {m}" for p, m in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Defaults(_Strict):
    """The base every study is a delta over: a preset plus dotted overrides."""

    preset: str = "tiny"
    overrides: dict[str, Any] = {}


class StudySpec(_Strict):
    """A grid over config axes, trained on every fold and seed."""

    description: str
    axes: dict[str, list[Any]] = Field(min_length=1)
    zip: list[list[str]] = []  # axes in one group vary together (same length), not as a product
    folds: Literal["all"] | list[int] = "all"
    seeds: list[int] = [0]
    reference: dict[str, Any]  # axis values of the cell every other cell is compared with
    overrides: dict[str, Any] = {}  # study-specific delta over the defaults

    @field_validator("axes")
    @classmethod
    def _non_empty_values(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in axes.items():
            if not values:
                raise ValueError(f"axis {path!r} has no values")
        return axes


class ParamSpec(_Strict):
    """One Optuna search dimension."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None


class SearchSpec(_Strict):
    """An Optuna search: the objective is mean validation UAR over ``folds`` (never test)."""

    description: str
    space: dict[str, ParamSpec] = Field(min_length=1)
    trials: int = Field(default=40, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "wilcoxon", "none"] = "median"
    folds: list[int] = [0, 1, 2]
    seed: int = 0
    overrides: dict[str, Any] = {}


class PaperTable(_Strict):
    study: str
    metrics: list[str] = ["test/uar", "test/war", "test/f1"]
    caption: str


class PaperSpec(_Strict):
    tables: dict[str, PaperTable] = {}
    efficiency: dict[str, dict[str, Any]] = {}  # row name -> {"preset": ..., "overrides": {...}}


class Ablations(_Strict):
    defaults: Defaults = Defaults()
    studies: dict[str, StudySpec] = {}
    searches: dict[str, SearchSpec] = {}
    paper: PaperSpec = PaperSpec()


def _locate(where: str, spec: StudySpec, path: str) -> str:
    """Point a config error at the study key that caused it."""
    if path in spec.overrides and path not in spec.axes:
        return f"{where}.overrides.{path}"
    return f"{where}.axes.{path}"


def _check_study(name: str, spec: StudySpec, defaults: Defaults) -> list[tuple[str, str]]:
    from studies.grid import expand_cells

    where = f"studies.{name}"
    errors: list[tuple[str, str]] = []
    for i, group in enumerate(spec.zip):
        for path in group:
            if path not in spec.axes:
                errors.append((f"{where}.zip.{i}", f"{path!r} is not one of the axes"))
        lengths = {len(spec.axes[p]) for p in group if p in spec.axes}
        if len(lengths) > 1:
            errors.append((f"{where}.zip.{i}", "zipped axes must have the same number of values"))
    for path in spec.reference:
        if path not in spec.axes:
            errors.append((f"{where}.reference.{path}", "not one of the axes"))
    if errors:
        return errors
    try:
        cells = expand_cells(spec, defaults)
    except ConfigError as exc:
        return [(_locate(where, spec, p), m) for p, m in exc.errors]
    if not any(c.axes == {**c.axes, **spec.reference} for c in cells):
        errors.append((f"{where}.reference", f"{spec.reference} matches no cell of the grid"))
    if spec.folds != "all" and any(f < 0 for f in spec.folds):
        errors.append((f"{where}.folds", "fold indices start at 0"))
    return errors


def _check_search(name: str, spec: SearchSpec, defaults: Defaults) -> list[tuple[str, str]]:
    from fer.config import resolve_config

    where = f"searches.{name}"
    errors: list[tuple[str, str]] = []
    sample: dict[str, Any] = {}
    for path, p in spec.space.items():
        if p.type == "categorical":
            if not p.choices:
                errors.append((f"{where}.space.{path}.choices", "categorical needs choices"))
                continue
            sample[path] = p.choices[0]
        else:
            if p.low is None or p.high is None or p.low > p.high:
                errors.append((f"{where}.space.{path}", "needs low <= high"))
                continue
            if p.log and p.low <= 0:
                errors.append((f"{where}.space.{path}.low", "log scale needs low > 0"))
            sample[path] = int(p.low) if p.type == "int" else float(p.low)
    if errors:
        return errors
    try:
        resolve_config(defaults.preset, {**defaults.overrides, **spec.overrides, **sample})
    except ConfigError as exc:
        errors.extend((f"{where}.space.{p}", m) for p, m in exc.errors)
    return errors


def validate(raw: Any, source: str = "ablations.yaml") -> Ablations:
    """Validate a parsed ablations document; raise SpecError with every problem."""
    if not isinstance(raw, dict):
        raise SpecError([("(top level)", "expected a mapping with defaults/studies/searches/paper")], source)
    try:
        spec = Ablations.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_errors(exc), source) from None
    errors: list[tuple[str, str]] = []
    try:
        from fer.config import resolve_config

        resolve_config(spec.defaults.preset, spec.defaults.overrides)
    except ConfigError as exc:
        errors.extend((f"defaults.{'overrides.' if p != 'preset' else ''}{p}", m) for p, m in exc.errors)
    if not errors:
        for name, study in spec.studies.items():
            errors.extend(_check_study(name, study, spec.defaults))
        for name, search in spec.searches.items():
            errors.extend(_check_search(name, search, spec.defaults))
    for table, t in spec.paper.tables.items():
        if t.study not in spec.studies:
            errors.append((f"paper.tables.{table}.study", f"unknown study {t.study!r}"))
    if errors:
        raise SpecError(errors, source)
    return spec


def load_ablations(path: str | Path = "ablations.yaml") -> Ablations:
    """Read and validate an ablations file (``yaml.safe_load``)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError([("(file)", "not found")], str(path)) from None
    except yaml.YAMLError as exc:
        raise SpecError([("(yaml)", str(exc).replace("\n", " "))], str(path)) from None
    return validate(raw, str(path))
