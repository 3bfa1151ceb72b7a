"""``reports/paper/``: every table declared in the ``paper:`` section, plus an efficiency table.

The ``paper:`` section of ``ablations.yaml`` (schema and validation: ``studies.spec``):

    paper:
      tables:
        fusion-depth:                # table name: fusion-depth.csv/.md/.tex
          study: fusion-depth        # a declared study
          metrics: [test/uar, test/war, test/f1]
          caption: Effect of the number of LFM2 fusion layers.
      efficiency:
        tiny: {preset: tiny}         # row name: a preset plus optional overrides

A table's reference cell and row order are its study's: the study's declared ``reference`` and
cell order. This module takes them as plain, already validated data (``PaperTable``).

Partial results are still results: a table whose study has no finished unit yet (no experiment,
no unit run, every unit failed) is left out and listed, in the README and in ``Paper.missing``,
with the command that would run it; every other table is written.

The efficiency table comes from rows the caller measures (``measure_efficiency``, the numbers of
``runner.py profile``): name, params, params_trainable, gflops, train_mem_mb, clips_per_s (the
last three optional).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analysis.files import redact_uri, safe_name, write_text
from analysis.load import ReportError, load_study_runs
from analysis.stats import finished
from analysis.tables import (CSV_FLOAT, reference_cell, render_csv, render_latex, render_markdown, study_table,
                             table_caption, tex_escape)
from fer.config import ConfigError, validation_errors


@dataclass(frozen=True)
class PaperTable:
    """One paper table, as ``studies.spec.Ablations.paper_tables`` hands it out.

    Attributes:
        study: the study (= MLflow experiment) it summarises.
        metrics: its metric columns, in order.
        caption: the table's title sentence.
        reference: the reference cell's name (None: the first cell).
        cell_order: cell names in declared order (None: sorted by axis values).
    """

    study: str
    metrics: list[str]
    caption: str
    reference: str | None = None
    cell_order: list[str] | None = None


class EfficiencyRow(BaseModel):
    """One configuration's measured cost (parameters, GFLOPs per clip, memory in MiB, clips per second)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    params: float = Field(ge=0)
    params_trainable: float | None = Field(default=None, ge=0)
    gflops: float = Field(ge=0)
    train_mem_mb: float | None = Field(default=None, ge=0)
    clips_per_s: float | None = Field(default=None, ge=0)


# (row field, table.csv column, header, scale, decimals)
EFFICIENCY_FIELDS = (("params", "params_m", "Params (M)", 1e-6, 2),
                     ("params_trainable", "trainable_m", "Trainable (M)", 1e-6, 2), ("gflops", "gflops", "GFLOPs", 1.0, 2),
                     ("train_mem_mb", "train_mem_gib", "Train memory (GiB)", 1 / 1024, 2),
                     ("clips_per_s", "clips_per_s", "Clips/s", 1.0, 1))


def measure_efficiency(configs: Mapping) -> list[dict]:
    """One efficiency row per named configuration (``runner.py profile`` numbers, meta device).

    Each configuration is measured at its own ``train.batch_size`` and ``train.precision`` (the
    precision sets the bytes of each saved activation in the memory estimate).

    Args:
        configs: row name -> resolved ``RunConfig``.

    Returns:
        Rows of name, params, params_trainable, gflops, train_mem_mb, for ``write_paper``.
    """
    from fer.models.profile import profile_model

    rows = []
    for name, cfg in configs.items():
        total = profile_model(cfg, batch=cfg.train.batch_size, precision=cfg.train.precision)["total"]
        rows.append({"name": name, "params": total["params_total"], "params_trainable": total["params_trainable"],
                     "gflops": total["gflops_per_clip"], "train_mem_mb": total["train_mem_estimate_mb"]})
    return rows


def efficiency_table(rows: pd.DataFrame | Sequence[Mapping]) -> pd.DataFrame:
    """Validated efficiency rows -> ``name`` plus the scaled columns of ``EFFICIENCY_FIELDS``.

    Raises:
        ConfigError: a row with a missing, unknown or negative field (path ``efficiency.<i>.<field>``).
    """
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    # A frame marks an unmeasured figure as NaN; the row model wants None for "not given".
    records = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in records]
    parsed, errors = [], []
    for i, record in enumerate(records):
        try:
            parsed.append(EfficiencyRow.model_validate(record))
        except ValidationError as exc:
            errors += validation_errors(exc, prefix=f"efficiency.{i}")
    if errors:
        raise ConfigError(errors)
    out = pd.DataFrame({"name": [r.name for r in parsed]})
    for field, column, _, scale, _ in EFFICIENCY_FIELDS:
        values = [getattr(r, field) for r in parsed]
        if any(v is not None for v in values):  # an optional figure nobody measured gets no column
            out[column] = [float("nan") if v is None else v * scale for v in values]
    return out


def _efficiency_texts(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    fields = [(column, header, d) for _, column, header, _, d in EFFICIENCY_FIELDS if column in table]
    headers = ["Configuration", *(h for _, h, _ in fields)]
    rows = [[row["name"], *("n/a" if pd.isna(row[c]) else f"{row[c]:.{d}f}" for c, _, d in fields)]
            for _, row in table.iterrows()]
    return headers, rows


def render_efficiency(table: pd.DataFrame) -> dict[str, str]:
    """The efficiency table as ``{"md": ..., "tex": ..., "csv": ...}`` texts."""
    headers, rows = _efficiency_texts(table)
    caption = ("Cost per configuration: parameters, GFLOPs per clip (forward pass), estimated training "
               "memory and training throughput, where measured.")
    md = ["| " + " | ".join(headers) + " |", "|:---|" + "---:|" * (len(headers) - 1)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    tex = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(caption)}}}", r"\label{tab:efficiency}",
           rf"\begin{{tabular}}{{l{'r' * (len(headers) - 1)}}}", r"\toprule",
           " & ".join(tex_escape(h) for h in headers) + r" \\", r"\midrule",
           *(" & ".join(tex_escape(c) for c in r) + r" \\" for r in rows), r"\bottomrule", r"\end{tabular}",
           r"\end{table}"]
    return {"md": "\n".join(md) + f"\n\n**Table.** {caption}\n", "tex": "\n".join(tex) + "\n",
            "csv": table.to_csv(index=False, float_format=CSV_FLOAT, lineterminator="\n")}


@dataclass(frozen=True)
class Paper:
    """What ``write_paper`` wrote, and the tables it could not write yet.

    Attributes:
        files: every written path, README.md last.
        missing: table name -> why it is missing (its study has no finished unit).
        commands: table name -> the command that would run its study.
    """

    files: list[Path]
    missing: dict[str, str]
    commands: dict[str, str]


def run_command(study: str) -> str:
    """The command that trains study ``study`` (its declared preset, folds and seeds)."""
    return f"python runner.py study {study} --data-root DIR"


def write_paper(tables: Mapping[str, Mapping], *, tracking_uri: str, out_dir: Path,
                efficiency: pd.DataFrame | Sequence[Mapping] | None = None, command: str | None = None) -> Paper:
    """Write every declared table whose study has finished units (``<name>.csv/.md/.tex``), the
    efficiency table and a README that lists the tables left out.

    Args:
        tables: table name -> the fields of ``PaperTable`` (study, metrics, caption, reference,
            cell_order), validated by the caller (``studies.spec``).
        tracking_uri: MLflow tracking URI the studies were logged to.
        out_dir: output folder, conventionally ``reports/paper``.
        efficiency: rows of name, params, gflops and optionally params_trainable, train_mem_mb,
            clips_per_s; no efficiency table when None.
        command: command line recorded in the README.

    Returns:
        ``Paper``: the written paths (README.md last) and the tables left out, each with why and
        the command that would run its study.

    Raises:
        ConfigError: an invalid efficiency row (nothing is written).
        ReportError: a bad reference or metric of a study that has finished units (nothing is written).
    """
    out_dir = Path(out_dir)
    tables = {name: PaperTable(**entry) for name, entry in tables.items()}
    eff = efficiency_table(efficiency) if efficiency is not None else None
    # Every study is read and checked before the first file is written.
    texts: list[tuple[Path, str, str]] = []
    sources = []
    missing: dict[str, str] = {}
    for name, spec in tables.items():
        try:
            units = load_study_runs(spec.study, tracking_uri, cell_order=spec.cell_order)
        except ReportError as exc:  # not run yet (no experiment, no unit), or runs it cannot read
            missing[name] = str(exc)
            continue
        if finished(units).empty:
            missing[name] = f"study {spec.study!r} has no finished unit ({len(units)} unit runs, none FINISHED)"
            continue
        for metric in spec.metrics:
            finished(units, metric)
        reference = reference_cell(units, spec.reference)
        table = study_table(units, spec.metrics, reference)
        caption = table_caption(units, spec.metrics, reference, title=spec.caption)
        stem = safe_name(name)
        desc = f"table `{name}` from study `{spec.study}`"
        texts += [(out_dir / f"{stem}.csv", render_csv(table), desc),
                  (out_dir / f"{stem}.md", render_markdown(table, spec.metrics, caption), desc),
                  (out_dir / f"{stem}.tex", render_latex(table, spec.metrics, caption, f"tab:{stem}"), desc)]
        commits = sorted(finished(units)["git_commit"].fillna("unknown").unique())
        sources.append(f"- `{name}`: study `{spec.study}` (MLflow experiment id {units.attrs['experiment_id']}), "
                       f"{int((units['status'] == 'FINISHED').sum())}/{len(units)} units finished, reference "
                       f"`{reference}`, commits {', '.join(f'`{c}`' for c in commits)}")
    if eff is not None:
        texts += [(out_dir / f"efficiency.{suffix}", text, "efficiency over configurations")
                  for suffix, text in render_efficiency(eff).items()]
    files = [(write_text(path, text), desc) for path, text, desc in texts]
    commands = {name: run_command(tables[name].study) for name in missing}
    lines = ["# Paper tables", "", "Generated from MLflow runs only. Regenerate with:", "", "```",
             command or "python runner.py paper", "```", "", f"- MLflow tracking URI: `{redact_uri(tracking_uri)}`",
             *sources]
    if missing:
        lines += ["", "## Not written yet", "",
                  "Their studies have no finished unit; run them, then `paper` again:", ""]
        lines += [f"- `{name}` (study `{tables[name].study}`): {redact_uri(reason)}. Run: `{commands[name]}`"
                  for name, reason in missing.items()]
    lines += ["", "## Files", "", "| File | Content |", "|:---|:---|"]
    lines += [f"| [{p.name}]({p.name}) | {desc} |" for p, desc in files]
    readme = write_text(out_dir / "README.md", "\n".join(lines) + "\n")
    return Paper(files=[p for p, _ in files] + [readme], missing=missing, commands=commands)
