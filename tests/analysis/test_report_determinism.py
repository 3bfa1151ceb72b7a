"""A study report is a function of the runs alone: written by two separate processes (other hash
seeds, so other set and dict orders), from two stores holding the same runs logged in opposite
orders (so MLflow lists them differently), every table, figure and README is the same byte for byte.

What does differ is what MLflow draws at random for each run: its id and artifact folder. units.csv
lists them, and is compared without those columns."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from analysis_fixtures import DECLARED, FOLDS, SEEDS, STUDY, Store, log_modality_study

ROOT = Path(__file__).resolve().parents[2]
RUN_COLUMNS = ("run_id", "parent_run_id", "artifact_uri")  # a store's own, per run
# Relative to each store's folder (the report's working directory), so both READMEs name the same URI.
URI = "sqlite:///mlflow.db"
WRITE_REPORT = """\
import sys
from pathlib import Path
from analysis.report import write_study_report

out = Path(sys.argv[2])
files = write_study_report("modality", tracking_uri=sys.argv[1], out_dir=out, reference="av",
                           command="python runner.py report modality", cell_order=["audio", "visual", "av"],
                           note="Synthetic data: test fixture.")
print("\\n".join(p.relative_to(out).as_posix() for p in files))
"""


def _store(root: Path, **order) -> list[tuple[str, str, str]]:
    """Log study modality into a store under ``root`` in the given order; returns the
    (cell, fold, seed) of its unit runs in the order MLflow lists them."""
    from mlflow import MlflowClient

    (root / "upload").mkdir(parents=True)
    store = Store(uri=f"sqlite:///{root}/mlflow.db", root=root)
    client = MlflowClient(tracking_uri=store.uri)
    log_modality_study(client, store, root / "artifacts", root / "upload", **order)
    exp = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit'")
    return [(r.data.tags["cell"], r.data.tags["fold"], r.data.tags["seed"]) for r in runs]


def _report(store: Path, out: Path, hash_seed: int) -> list[str]:
    """Write the report in a fresh interpreter; returns the files in the order it lists them."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(store), "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": str(hash_seed),
           "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(store / "mpl")}
    done = subprocess.run([sys.executable, "-c", WRITE_REPORT, URI, str(out)], cwd=store, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> tuple[tuple[Path, list[str]], tuple[Path, list[str]]]:
    base = tmp_path_factory.mktemp("determinism")
    forward = _store(base / "forward", cells=DECLARED)
    backward = _store(base / "backward", cells=DECLARED[::-1], folds=FOLDS[::-1], seeds=SEEDS[::-1])
    assert sorted(forward) == sorted(backward) and forward != backward, "both stores list their runs alike"
    return ((base / "a", _report(base / "forward", base / "a", hash_seed=1)),
            (base / "b", _report(base / "backward", base / "b", hash_seed=2)))


def _without_run_columns(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    keep = [i for i, name in enumerate(rows[0]) if name not in RUN_COLUMNS]
    assert len(keep) == len(rows[0]) - len(RUN_COLUMNS)
    return [[row[i] for i in keep] for row in rows]


@pytest.mark.slow
def test_other_process_and_other_run_order_give_the_same_bytes(reports):
    (a, files_a), (b, files_b) = reports
    assert files_a == files_b and len(files_a) == 24 and files_a[-1] == "README.md"
    assert {f.rsplit(".", 1)[-1] for f in files_a} == {"csv", "md", "tex", "png", "pdf"}
    for name in files_a:
        if name != "units.csv":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_units_differ_only_in_the_stores_run_ids(reports):
    (a, _), (b, _) = reports
    units_a, units_b = ((d / "units.csv").read_text() for d in (a, b))
    assert units_a != units_b, "each store draws its own run ids"
    assert _without_run_columns(units_a) == _without_run_columns(units_b)
    header, *rows = _without_run_columns(units_a)
    at = [header.index(k) for k in ("cell", "fold", "seed")]
    assert [tuple(row[i] for i in at) for row in rows] == [
        (cell, str(f), str(s)) for cell in DECLARED for f in FOLDS for s in SEEDS]
