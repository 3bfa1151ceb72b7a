"""Every command answers a user's mistake with one `error: ...` line and a non-zero exit, never a
traceback: a wrong study, search, cell or run id; a missing or empty data root; a tracking server or
database that does not answer; a database driver that is not installed; a cache that cannot be
written.

Each case is ``python runner.py ARGS`` run as ``__main__`` in a fresh interpreter; the cases share
one interpreter (run one after the other, each with its own output and exit code) so the test pays
the start-up once. Servers that do not answer are 127.0.0.1 on a port nobody listens on, refused
at once; ``pg8000`` (``postgresql+pg8000://``) is a driver this environment does not install.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

DRIVER = r"""
import contextlib, io, json, os, runpy, sys, traceback
runner, cases = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, os.path.dirname(runner))
results = {}
for name, args in cases.items():
    out = io.StringIO()
    sys.argv = ["runner.py", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_path(runner, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter would print and exit 1 with
            traceback.print_exc()
            code = 1
    results[name] = {"code": code, "output": out.getvalue()}
print("RESULTS=" + json.dumps(results))
"""


def closed_port() -> int:
    """A local port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = closed_port()
HTTP = f"http://127.0.0.1:{PORT}"
NO_DRIVER = "postgresql+pg8000://user:secret@127.0.0.1/fer"
NO_SERVER = f"postgresql://user:secret@127.0.0.1:{PORT}/fer"
PAPER = {"studies": {"first": {"description": "x", "axes": {"model.modality": ["audio", "av"]},
                               "reference": {"model.modality": "av"}}},
         "paper": {"tables": {"first": {"study": "first", "caption": "x"}}}}

# name -> (arguments, exit code, what the error line says). {ws} is the working folder: FAKE holds
# one clip by its file name, EMPTY none, FILE is a file (a cache below it cannot be made).
CASES = {
    "study-unknown": (["study", "nope", "--dry-run"], 2, "unknown study 'nope'; declared studies: "),
    "study-missing-root": (["study", "modality", "--data-root", "{ws}/missing"], 2, "'--data-root'"),
    "study-empty-root": (["study", "modality", "--data-root", "{ws}/EMPTY"], 2, "no ravdess clips"),
    "study-protocol": (["study", "modality", "--dry-run", "--set", "data.protocol=nope"], 2,
                       "every cell: data.protocol: protocol 'nope' is not a ravdess protocol"),
    "study-no-driver": (["study", "modality", "--dry-run", "--storage", NO_DRIVER], 1,
                        "database driver 'pg8000' is not installed: pip install pg8000"),
    "study-no-db-server": (["study", "modality", "--dry-run", "--storage", NO_SERVER], 1,
                           f"cannot reach the database server at 127.0.0.1:{PORT}"),
    "study-no-tracking": (["study", "modality", "--data-root", "{ws}/FAKE", "--tracking-uri", HTTP], 1,
                          f"cannot reach the MLflow tracking server at 127.0.0.1:{PORT}"),
    "study-cache": (["study", "modality", "--data-root", "{ws}/FAKE", "--cache", "{ws}/FILE/cache"], 1,
                    "is a file, not a folder: choose another --cache"),
    "study-ledger-folder": (["study", "modality", "--data-root", "{ws}/FAKE", "--storage", "{ws}/FILE/l.journal"], 1,
                            "--storage {ws}/FILE/l.journal: {ws}/FILE is a file, not a folder"),
    "tune-unknown": (["tune", "nope"], 2, "unknown search 'nope'; declared searches: fusion-hparams"),
    "tune-empty-root": (["tune", "fusion-hparams", "--data-root", "{ws}/EMPTY"], 2, "no ravdess clips"),
    "tune-no-driver": (["tune", "fusion-hparams", "--data-root", "{ws}/FAKE", "--storage", NO_DRIVER], 1,
                       "database driver 'pg8000' is not installed"),
    "tune-no-tracking": (["tune", "fusion-hparams", "--data-root", "{ws}/FAKE", "--tracking-uri", HTTP], 1,
                         "cannot reach the MLflow tracking server"),
    "report-unknown": (["report", "nope"], 2, "'nope' is neither a declared study nor a search"),
    "report-not-run": (["report", "modality", "--tracking-uri", "sqlite:///{ws}/mlflow.db"], 1,
                       "no MLflow experiment named 'modality'"),
    "report-no-tracking": (["report", "modality", "--tracking-uri", HTTP], 1,
                           "cannot reach the MLflow tracking server"),
    "report-search-no-driver": (["report", "fusion-hparams", "--storage", NO_DRIVER], 1,
                                "database driver 'pg8000' is not installed"),
    "paper-no-tracking": (["--ablations", "{ws}/paper.yaml", "paper", "--tracking-uri", HTTP], 1,
                          "cannot reach the MLflow tracking server"),
    "paper-strict": (["--ablations", "{ws}/paper.yaml", "paper", "--strict", "--out", "{ws}/paper",
                      "--tracking-uri", "sqlite:///{ws}/mlflow.db"], 1,
                     "--strict: 1 of 1 paper tables missing (first)"),
    "paper-out": (["--ablations", "{ws}/paper.yaml", "paper", "--out", "{ws}/FILE/paper",
                   "--tracking-uri", "sqlite:///{ws}/mlflow.db"], 1, "cannot write {ws}/FILE/paper"),
    "predict-unknown-study": (["predict", "{ws}/clip.mp4", "--study", "nope", "--cell", "a",
                               "--tracking-uri", "sqlite:///{ws}/mlflow.db"], 2, "no study 'nope'"),
    "predict-unknown-run": (["predict", "{ws}/clip.mp4", "--run", "deadbeef", "--tracking-uri",
                             "sqlite:///{ws}/mlflow.db"], 2, "no run 'deadbeef' in the tracking store"),
    "predict-no-tracking": (["predict", "{ws}/clip.mp4", "--run", "deadbeef", "--tracking-uri", HTTP], 1,
                            "cannot reach the MLflow tracking server"),
    "export-unknown-run": (["export", "--run", "deadbeef", "--out", "{ws}/m.onnx", "--tracking-uri",
                            "sqlite:///{ws}/mlflow.db"], 2, "no run 'deadbeef' in the tracking store"),
    "export-no-tracking": (["export", "--run", "deadbeef", "--out", "{ws}/m.onnx", "--tracking-uri", HTTP], 1,
                           "cannot reach the MLflow tracking server"),
    "folds-empty-root": (["folds", "--data-root", "{ws}/EMPTY"], 2, "no ravdess clips"),
    "folds-missing-root": (["folds", "--data-root", "{ws}/missing"], 2, "'--data-root'"),
    "prepare-empty-root": (["prepare", "--data-root", "{ws}/EMPTY"], 2, "no ravdess clips"),
    "prepare-cache": (["prepare", "--data-root", "{ws}/FAKE", "--cache", "{ws}/FILE/cache"], 1,
                      "is a file, not a folder: choose another --cache"),
    "weights-list-unknown": (["weights", "list", "--study", "nope"], 2, "'nope' is neither a declared study"),
    "weights-fetch-unknown": (["weights", "fetch", "--study", "nope"], 2, "'nope' is neither a declared study"),
    "weights-fetch-cache": (["weights", "fetch", "--preset", "rtx3050", "--cache", "{ws}/FILE/cache"], 1,
                            "is a file, not a folder: choose another --cache"),
    "profile-cannot-build": (["profile", "--set", "model.visual.roi.k=100"], 2,
                             "preset tiny: model.visual.roi.k = 100 exceeds the 64 patches of the 8x8 grid"),
    "ui-no-folder": (["ui", "--tracking-uri", "sqlite:///{ws}/missing/mlflow.db"], 1,
                     "folder {ws}/missing does not exist"),
    "dashboard-no-driver": (["dashboard", "--storage", NO_DRIVER], 1, "database driver 'pg8000' is not installed"),
    "dashboard-no-server": (["dashboard", "--storage", NO_SERVER], 1, "cannot reach the database server"),
    "study-ledger-in-mlflow-store": (["study", "modality", "--dry-run", "--storage", "sqlite:///{ws}/mlstore.db"], 1,
                                     "this database holds another program's tables (an MLflow tracking store?)"),
    "tune-ledger-in-mlflow-store": (["tune", "fusion-hparams", "--data-root", "{ws}/FAKE", "--storage",
                                     "sqlite:///{ws}/mlstore.db"], 1, "give the ledger a database of its own"),
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("cli")
    (ws / "EMPTY").mkdir()
    (ws / "FAKE" / "Actor_01").mkdir(parents=True)
    (ws / "FAKE" / "Actor_01" / "01-01-01-01-01-01-01.mp4").write_bytes(b"x")
    (ws / "FILE").write_text("a file where a folder would go")
    (ws / "clip.mp4").write_bytes(b"x")
    (ws / "paper.yaml").write_text(yaml.safe_dump(PAPER))
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{ws / 'mlstore.db'}").search_experiments()  # an MLflow store: its tables made
    return ws


@pytest.fixture(scope="module")
def results(ws) -> dict:
    """Every case's exit code and output, from one interpreter running them in turn."""
    cases = {name: [a.format(ws=ws) for a in args] for name, (args, _, _) in CASES.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FER_", "MLFLOW_"))}
    env.update(FER_CACHE_DIR=str(ws / "cache"), HF_HUB_OFFLINE="1", HF_HOME=str(ws / "hf"),
               MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / "runner.py"), json.dumps(cases)], cwd=ws,
                          env=env, capture_output=True, text=True, timeout=600)
    assert "RESULTS=" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.rsplit("RESULTS=", 1)[1])


@pytest.mark.parametrize("name", list(CASES))
def test_a_user_error_is_one_error_line_and_a_non_zero_exit(name, results, ws):
    _, code, says = CASES[name]
    result = results[name]
    output = result["output"]
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.lower().startswith("error: ")]
    assert len(errors) == 1, output
    assert says.format(ws=ws) in errors[0], output
    assert result["code"] == code, output
