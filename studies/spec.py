"""The schema of ``ablations.yaml``: declared studies, searches and paper tables.

Loading validates everything at once and reports each problem with its key path, e.g.
``studies.fusion-depth.axes.model.fusion.layerz: names no config field``. Nothing runs on a
bad file. Axis paths, search parameters and the paper's efficiency rows are checked against the
real ``RunConfig`` by resolving them, so a typo in a dotted path cannot slip through. This is the
only validator of the file: the layers that use a section (``analysis.paper``) take the plain
data these models hand out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fer.config import ConfigError, RunConfig, resolve_config, validation_errors
from studies.options import StudyError


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
    preset: str | None = None  # the preset the study is meant for; None: the defaults' (--preset beats both)
    overrides: dict[str, Any] = {}  # study-specific delta over the defaults

    @field_validator("axes")
    @classmethod
    def _non_empty_values(cls, axes: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in axes.items():
            if not values:
                raise ValueError(f"axis {path!r} has no values")
        return axes

    def cell_names(self) -> list[str]:
        """Every cell's name (``layers=2``) in declared order: the row order of its reports."""
        from studies.grid import axis_points, cell_name

        return [cell_name(p) for p in axis_points(self.axes, self.zip)]

    def reference_cell(self) -> str | None:
        """The name of the first cell whose axis values include ``reference``; None if none does."""
        from studies.grid import axis_points, cell_name

        return next((cell_name(p) for p in axis_points(self.axes, self.zip) if p == {**p, **self.reference}),
                    None)


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
    """One table of the paper: a declared study's cells, in declared order, against its reference."""

    study: str
    metrics: list[str] = Field(default=["test/uar", "test/war", "test/f1"], min_length=1)
    caption: str


class EfficiencyRow(_Strict):
    """One configuration of the paper's efficiency table: a preset plus dotted overrides.

    Not a delta over ``defaults``: a row names the configuration it measures in full.
    """

    preset: str | None = None  # None: the default preset
    overrides: dict[str, Any] = {}


class PaperSpec(_Strict):
    tables: dict[str, PaperTable] = {}
    efficiency: dict[str, EfficiencyRow] = {}  # row name -> configuration


class Ablations(_Strict):
    defaults: Defaults = Defaults()
    studies: dict[str, StudySpec] = {}
    searches: dict[str, SearchSpec] = {}
    paper: PaperSpec = PaperSpec()

    def study(self, name: str) -> StudySpec:
        """The declared study ``name``; a ``StudyError`` listing the declared ones otherwise."""
        if name not in self.studies:
            raise StudyError(f"unknown study {name!r}; declared studies: {', '.join(sorted(self.studies)) or '(none)'}")
        return self.studies[name]

    def study_preset(self, name: str, preset: str | None = None) -> str:
        """The preset study ``name`` runs on: ``preset`` (``--preset``), else the study's declared
        one, else the defaults'. A ``StudyError`` for an unknown study."""
        return preset or self.study(name).preset or self.defaults.preset

    def search(self, name: str) -> SearchSpec:
        """The declared search ``name``; a ``StudyError`` listing the declared ones otherwise."""
        if name not in self.searches:
            raise StudyError(f"unknown search {name!r}; declared searches: "
                             f"{', '.join(sorted(self.searches)) or '(none)'}")
        return self.searches[name]

    def paper_tables(self) -> dict[str, dict[str, Any]]:
        """Every paper table as plain data for ``analysis.paper.write_paper``: study, metrics,
        caption, and the study's reference cell and cell order resolved to names."""
        return {name: {"study": t.study, "metrics": list(t.metrics), "caption": t.caption,
                       "reference": self.studies[t.study].reference_cell(),
                       "cell_order": self.studies[t.study].cell_names()}
                for name, t in self.paper.tables.items()}

    def efficiency_configs(self) -> dict[str, RunConfig]:
        """Every efficiency row's resolved configuration, by row name."""
        return {name: resolve_config(row.preset or self.defaults.preset, row.overrides)
                for name, row in self.paper.efficiency.items()}


def _check_delta(where: str, preset: str, overrides: dict[str, Any]) -> list[tuple[str, str]]:
    """Errors of a preset plus overrides that do not resolve, at ``where.preset`` / ``where.overrides.<path>``."""
    try:
        resolve_config(preset, overrides)
    except ConfigError as exc:
        return [(f"{where}.{'overrides.' if p != 'preset' else ''}{p}", m) for p, m in exc.errors]
    return []


def _locate(where: str, spec: StudySpec, path: str) -> str:
    """Point a config error at the study key that caused it."""
    if path == "preset" and spec.preset is not None:
        return f"{where}.preset"
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
        cells = expand_cells(spec, defaults, preset=spec.preset)
    except ConfigError as exc:
        return [(_locate(where, spec, p), m) for p, m in exc.errors]
    if spec.reference_cell() is None:
        errors.append((f"{where}.reference", f"{spec.reference} matches no cell of the grid"))
    # an axis may vary the protocol or the dataset
    protocols = dict.fromkeys((c.config.data.dataset, c.config.data.protocol) for c in cells)
    declared = "data.protocol" in spec.axes or "data.protocol" in spec.overrides
    protocol_at = _locate(where, spec, "data.protocol") if declared else "defaults.overrides.data.protocol"
    return errors + [e for dataset, protocol in protocols
                     for e in _check_folds(where, spec.folds, protocol, protocol_at, dataset)]


def _check_folds(where: str, folds, protocol: str, protocol_at: str,
                 dataset: str = "ravdess") -> list[tuple[str, str]]:
    """Declared fold indices that the dataset's protocol does not have, at ``where.folds``; an
    unknown protocol at ``protocol_at``."""
    from fer.data.protocols import ProtocolError
    from studies.grid import resolve_folds

    try:
        resolve_folds(folds, protocol, dataset)
    except ConfigError as exc:
        return [(f"{where}.{p}", m) for p, m in exc.errors]
    except ProtocolError as exc:
        return [(protocol_at, str(exc))]
    return []


def _check_search(name: str, spec: SearchSpec, defaults: Defaults) -> list[tuple[str, str]]:
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
        cfg = resolve_config(defaults.preset, {**defaults.overrides, **spec.overrides, **sample})
    except ConfigError as exc:
        return [(f"{where}.space.{p}", m) for p, m in exc.errors]
    protocol_at = next((f"{where}.{key}.data.protocol" for key, paths in (("overrides", spec.overrides),
                        ("space", spec.space)) if "data.protocol" in paths), "defaults.overrides.data.protocol")
    return _check_folds(where, spec.folds, cfg.data.protocol, protocol_at, cfg.data.dataset)


def validate(raw: Any, source: str = "ablations.yaml") -> Ablations:
    """Validate a parsed ablations document; raise SpecError with every problem."""
    if not isinstance(raw, dict):
        raise SpecError([("(top level)", "expected a mapping with defaults/studies/searches/paper")], source)
    try:
        spec = Ablations.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_errors(exc), source) from None
    errors = _check_delta("defaults", spec.defaults.preset, spec.defaults.overrides)
    if not errors:
        for name, study in spec.studies.items():
            errors.extend(_check_study(name, study, spec.defaults))
        for name, search in spec.searches.items():
            errors.extend(_check_search(name, search, spec.defaults))
    for table, t in spec.paper.tables.items():
        if t.study not in spec.studies:
            errors.append((f"paper.tables.{table}.study", f"unknown study {t.study!r}"))
    for row, decl in spec.paper.efficiency.items():
        errors.extend(_check_delta(f"paper.efficiency.{row}", decl.preset or spec.defaults.preset, decl.overrides))
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
