"""The configurations a study or search can build, and the preflight that checks them before training.

Before the first unit, ``study`` and ``tune`` check, cheapest first, that every configuration
can run, and stop with exit 2 and every problem at once, having created nothing:

- its protocol is one its dataset has (``check_protocols``: no torch, milliseconds);
- the data root holds clips (``check_data_root``: file names only);
- every checkpoint it reads is on this machine (``check_weights``: ``fer.weights.resolver``, no
  network, milliseconds): the message names each missing one and the ``python runner.py weights
  fetch ...`` command that downloads them; ``weights list`` and ``weights fetch`` read the same
  configurations (``configs_of``), so that command fetches exactly what was missing;
- its model builds (``check_builds``): each cell's model is built on the meta device with random
  weights and no data, so a ROI budget ``k`` beyond the patch grid, fusion layers beyond the
  checkpoint's or a frame size that is not a multiple of the patch size is one error naming the
  cells and the config key. ``study --dry-run`` builds first, weights fetched or not: the
  architectures are written in the code.

Then the stores they open (``check_store``, ``check_writable``): a ledger or tracking server that
does not answer, a database driver that is not installed, a folder that cannot be written is one
line saying what to do (exit 1), at once rather than after minutes of retries.

    check_weights([c.config for c in cells], cache_dir, preset="rtx3050", study="fusion-depth")
    check_builds({c.name: c.config for c in cells}, cache_dir)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
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


def check_protocols(configs: Mapping[str, RunConfig]) -> None:
    """Stop when a configuration names a protocol its dataset does not have (no torch imported).

    Args:
        configs: label (a cell's name) -> configuration.
    Raises:
        ConfigError: ``(cells LABELS, data.protocol: ...)`` per unknown protocol, the known names listed.
    """
    from fer.data.datasets import get_dataset
    from fer.data.protocols import ProtocolError

    failed = {}
    for label, cfg in configs.items():
        try:
            get_dataset(cfg.data.dataset).fold_count(cfg.data.protocol)  # the names only, no data read
        except ProtocolError as exc:
            failed[label] = f"data.protocol: {exc}"
    if failed:
        raise ConfigError(_by_message(failed, len(configs)))


def check_builds(configs: Mapping[str, RunConfig], cache_dir: str | Path, *, kind: str = "cell") -> None:
    """Stop when a configuration's model cannot be built, one error per configuration.

    Each model is built on the meta device with random weights: shapes only, no weights read, no
    data, no memory, a fraction of a second; the global random state is left as it was. A fusion
    checkpoint outside the published LFM2 sizes has its architecture (``config.json``) read from
    disk; when it is not there the configuration is left to ``check_weights``, which names it.

    Args:
        configs: label (a cell's name) -> configuration.
        cache_dir: the project's cache (converted checkpoints under ``weights/``).
        kind: what a label names, in the message (``cell``, ``preset``).
    Raises:
        ConfigError: ``(cells LABELS, what failed)`` per distinct failure (the cells it hit); the
            message names the config key (``model.visual.roi.k = 128 exceeds the 64 patches ...``).
    """
    import torch

    from fer.config import merge
    from fer.models.model import build_model
    from fer.weights.resolver import MissingWeightsError, with_local_weights

    failed = {}
    with torch.random.fork_rng(devices=[]):
        for label, cfg in configs.items():
            shapes_only = type(cfg).model_validate(merge(cfg.model_dump(), {"model.random_weights": True}))
            try:
                build_model(with_local_weights(shapes_only, cache_dir), device="meta")
            except MissingWeightsError:
                continue
            except Exception as exc:  # whatever a builder raises is this cell's error, reported with the others
                what = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                failed[label] = f"{what} (preset {cfg.preset})"
    if failed:
        raise ConfigError(_by_message(failed, len(configs), kind))


def _by_message(failed: dict[str, str], total: int, kind: str = "cell") -> list[tuple[str, str]]:
    """``{cell: message}`` -> one ``(cells, message)`` per distinct message, in cell order:
    ``cell k=128``, ``cells k=128; k=256`` or ``every cell``."""
    cells: dict[str, list[str]] = {}
    for label, message in failed.items():
        cells.setdefault(message, []).append(label)
    return [(f"every {kind}" if len(labels) == total > 1 else
             f"{kind}{'s' if len(labels) > 1 else ''} {'; '.join(labels)}", message)
            for message, labels in cells.items()]


def check_data_root(data_root: str | Path, cfg: RunConfig) -> None:
    """Stop when ``data_root`` holds no clip of ``cfg.data.dataset`` (file names only, no decoding).

    Raises:
        StudyError: the message says where to point ``--data-root`` or how to write a synthetic set.
    """
    from studies.failures import empty_data_root
    from studies.options import StudyError

    problem = empty_data_root(data_root, cfg.data.dataset, cfg.data.vocal_channel)
    if problem:
        raise StudyError(problem)


def check_search(name: str, ablations, opts) -> None:
    """What ``tune`` checks before ``studies.tune.run_search`` (which checks the rest): the data
    root holds clips of the search's dataset, when one is given.

    Raises:
        StudyError: unknown search; a data root without clips.
        ConfigError: the search's base configuration does not resolve.
    """
    if opts.data_root is not None:
        base = search_cells(ablations, name, preset=opts.preset, overrides=opts.overrides)["base"]
        check_data_root(opts.data_root, base)


def check_study(name: str, ablations, opts, *, weights: bool = True) -> None:
    """The preflight of study ``name`` under ``opts`` (``studies.options.RunOptions``): protocols,
    the data root's clips (when one is given), pretrained weights (unless ``weights`` is False),
    then every cell's build.

    Raises:
        StudyError: unknown study; a data root without clips.
        ConfigError: bad overrides or axis values; unknown protocols; cells that do not build.
        MissingWeightsError: a checkpoint a cell reads is not on this machine.
    """
    from studies.grid import expand_cells

    preset = ablations.study_preset(name, opts.preset)
    cells = expand_cells(ablations.study(name), ablations.defaults, preset=preset, overrides=opts.overrides)
    configs = {c.name: c.config for c in cells}
    check_protocols(configs)
    if opts.data_root is not None:
        check_data_root(opts.data_root, cells[0].config)
    if weights:
        check_weights(list(configs.values()), opts.cache_dir, preset=preset, study=name,
                      assignments=opts.assignments)
    check_builds(configs, opts.cache_dir)


# The port a database server listens on unless its URL names one, by SQLAlchemy backend.
DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}
# What to install for a driver module SQLAlchemy imports (where the package name differs).
DRIVER_PACKAGES = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient",
                   "mysql": "mysql-connector-python"}


def check_store(uri: str, option: str, *, timeout: float = 5.0) -> None:
    """Stop at once when a store cannot be opened from here, instead of retrying for minutes.

    Looks without opening anything: an RDB URL's driver is importable and its server accepts a
    connection; an http(s) tracking server accepts one; an SQLite file's folder exists; a journal
    file's folder can be made (``check_writable``).

    Args:
        uri: ``--storage`` (a journal file path or an RDB URL) or ``--tracking-uri``.
        option: the option that gave it, named in the message.
        timeout: seconds to wait for a server to accept a connection.
    Raises:
        StoreError: one line: what is wrong and what to do.
    """
    from urllib.parse import urlsplit

    from studies.failures import StoreError

    if "://" not in uri:  # a journal file: its folder is made when missing
        check_writable(Path(uri).parent, option, given=uri)
        return
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme == "file":
        return
    if scheme in ("http", "https"):
        shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"  # no credentials
        _connect(parts.hostname or "localhost", parts.port or (443 if scheme == "https" else 80), timeout,
                 f"{option} {shown}: cannot reach the MLflow tracking server",
                 "start it (mlflow server ...) or pass another --tracking-uri")
        return
    if scheme == "sqlite":
        folder = Path(uri.split(":///", 1)[1]).parent if ":///" in uri else None
        if folder is not None and not folder.is_dir():
            raise StoreError(f"{option} {uri}: folder {folder} does not exist: create it or choose another path")
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        shown = url.render_as_string(hide_password=True)
        url.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError) as exc:
        raise StoreError(f"{option}: not a database URL SQLAlchemy knows ({exc})") from None
    except ImportError as exc:
        package = DRIVER_PACKAGES.get(exc.name or "", exc.name)
        raise StoreError(f"{option} {shown}: its database driver {exc.name!r} is not installed: pip install "
                         f"{package} (or, on one machine, a journal file: {option} runs/ledger.journal)") from None
    port = url.port or DB_PORTS.get(url.get_backend_name())
    if url.host and port:
        _connect(url.host, port, timeout, f"{option} {shown}: cannot reach the database server",
                 "start it, or check the host and port")


def check_writable(folder: str | Path, option: str, *, given: str | None = None) -> None:
    """Stop when ``folder`` could not be created or written: a file in the way, no permission, a
    read-only file system. Creates nothing. ``given``: what the user typed, when not ``folder``.

    Raises:
        StoreError: one line naming the folder, what is in the way, and the option to change.
    """
    import os

    from studies.failures import StoreError

    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    given = given or folder
    if not existing.is_dir():
        raise StoreError(f"{option} {given}: {existing} is a file, not a folder: choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"{option} {given}: {existing} is not writable (permissions or a read-only file "
                         f"system): choose another {option} or fix its permissions")


def _connect(host: str, port: int, timeout: float, what: str, todo: str) -> None:
    """Open and close a TCP connection to ``host:port``; a ``StoreError`` saying ``what`` and ``todo``."""
    import socket

    from studies.failures import StoreError

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StoreError(f"{what} at {host}:{port} ({reason.lower()}): {todo}") from None


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


def search_cells(ablations, name: str, *, preset: str | None = None,
                 overrides: dict[str, Any] | None = None) -> dict[str, RunConfig]:
    """The configurations of search ``name``: its base (``"base"``) and each of its ``search_points``,
    by point name (``layers=6,init=random``).

    A point whose configuration does not resolve is left out: its trial fails by itself.

    Raises:
        StudyError: unknown search.
        ConfigError: the base (preset, declared and command-line overrides) does not resolve.
    """
    from studies.grid import cell_name

    spec = ablations.search(name)
    base = {**ablations.defaults.overrides, **spec.overrides, **(overrides or {})}
    preset = preset or ablations.defaults.preset
    configs = {"base": resolve_config(preset, base)}
    for point in search_points(spec.space):
        try:
            configs[cell_name(point) or "base"] = resolve_config(preset, {**base, **point})
        except ConfigError:
            continue
    return configs


def search_configs(ablations, name: str, *, preset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> list[RunConfig]:
    """``search_cells``' configurations, base first."""
    return list(search_cells(ablations, name, preset=preset, overrides=overrides).values())


def configs_of(ablations, *, preset: str | None = None, study: str | None = None,
               overrides: dict[str, Any] | None = None) -> list[RunConfig]:
    """What ``weights list`` and ``weights fetch`` look at: a preset's configuration (the declared
    defaults' overrides, then ``overrides``), or every cell of a study (on the study's own preset
    unless ``preset`` is given), or the points of a search.

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
        cells = expand_cells(ablations.study(study), ablations.defaults, preset=ablations.study_preset(study, preset),
                             overrides=overrides)
        return [c.config for c in cells]
    if study in ablations.searches:
        return search_configs(ablations, study, preset=preset, overrides=overrides)
    raise StudyError(f"{study!r} is neither a declared study nor a search (studies: "
                     f"{', '.join(sorted(ablations.studies))}; searches: {', '.join(sorted(ablations.searches))})")
