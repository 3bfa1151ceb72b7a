"""The resolved run configuration: defaults, then a named preset, then dotted overrides.

Every section is a typed pydantic model that lives next to the code it configures
(``fer.data.config``, ``fer.models.config``, ``fer.train.config``). Unknown keys are
errors everywhere (``extra="forbid"``), so a dotted path that names no field fails loudly.

    cfg = resolve_config("tiny", {"model.fusion.layers": 2})
    cfg.model.fusion.layers  # 2
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fer.data.config import DataConfig
from fer.models.config import ModelConfig
from fer.presets import PRESETS
from fer.train.config import TrainConfig


class RunConfig(BaseModel):
    """Everything one run needs, apart from the fold and the seed."""

    model_config = ConfigDict(extra="forbid")

    preset: str = "tiny"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


class ConfigError(ValueError):
    """A configuration problem; ``errors`` holds one ``(key path, message)`` per problem."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("\n".join(f"{path}: {msg}" for path, msg in errors))


def merge(base: dict, delta: dict) -> dict:
    """Deep-merge ``delta`` into a copy of ``base``; dotted keys in ``delta`` are expanded."""
    out = copy.deepcopy(base)
    for key, value in delta.items():
        if "." in key:
            head, rest = key.split(".", 1)
            value = {rest: value}
            key = head
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = merge({}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validation_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Turn pydantic's errors into ``(dotted key path, message)`` pairs."""
    errors = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (no such config field)"
        errors.append((path, msg))
    return errors


def resolve_config(preset: str = "tiny", overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the preset's delta, then ``overrides`` (dotted paths or nested dicts).

    Raises:
        ConfigError: unknown preset, unknown key or bad value; every problem at once.
    """
    if preset not in PRESETS:
        raise ConfigError([("preset", f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")])
    tree = merge(merge({}, PRESETS[preset]), overrides or {})
    tree["preset"] = preset
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(validation_errors(exc)) from None


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["model.fusion.layers=2", "train.lr=1e-3"]`` -> dotted dict; values are YAML scalars."""
    out: dict[str, Any] = {}
    errors = []
    for item in items:
        if "=" not in item:
            errors.append((item, "expected key=value"))
            continue
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    if errors:
        raise ConfigError(errors)
    return out


def flatten(tree: dict | BaseModel, prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"model.fusion.layers": 2, ...}`` (lists kept as JSON strings)."""
    if isinstance(tree, BaseModel):
        tree = tree.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        elif isinstance(value, list):
            out[path] = json.dumps(value)
        else:
            out[path] = value
    return out


def config_hash(*parts: Any) -> str:
    """Stable short hash of JSON-able parts (configs are dumped in JSON mode, keys sorted)."""
    norm = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(norm, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
