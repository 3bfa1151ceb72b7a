"""The demo's orchestration (studies/demo.py and `runner.py demo`) without its expensive steps:
the paths and worker command it builds, workers as real subprocesses of a stand-in CLI, and the
command's exit codes and report on a study trained by the engine with stand-in training."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from runner import cli  # noqa: E402
from studies import demo  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_paths_and_worker_command():
    paths = demo.DemoPaths(Path("demo"))
    # Relative to the working folder: the committed report names this store.
    assert paths.tracking == "sqlite:///demo/mlflow.db"
    assert (paths.data, paths.cache, paths.storage, paths.report) == (
        Path("demo/ravdess"), Path("demo/cache"), "demo/ledger.journal", Path("demo/reports/modality"))
    cmd = demo.worker_command(paths, ablations=Path("a.yaml"), max_epochs=12)
    assert cmd == [sys.executable, str(ROOT / "runner.py"), "--ablations", "a.yaml", "study", "modality",
                   "--data-root", "demo/ravdess", "--cache", "demo/cache", "--preset", "tiny",
                   "--max-epochs", "12", "--storage", "demo/ledger.journal",
                   "--tracking-uri", "sqlite:///demo/mlflow.db"]


def test_workers_run_in_parallel_with_one_thread_each(tmp_path):
    """A stand-in CLI records its arguments and thread caps; exactly one worker fails (the one
    that creates the token file first)."""
    stub = tmp_path / "stub.py"
    stub.write_text(
        "import json, os, sys, pathlib\n"
        f"out = pathlib.Path({str(tmp_path)!r})\n"
        "(out / f'worker-{os.getpid()}.json').write_text(json.dumps({'argv': sys.argv[1:], "
        "'omp': os.environ.get('OMP_NUM_THREADS'), 'mkl': os.environ.get('MKL_NUM_THREADS')}))\n"
        "try:\n"
        "    os.close(os.open(out / 'token', os.O_CREAT | os.O_EXCL))\n"
        "except FileExistsError:\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n")
    codes = demo.run_workers(demo.DemoPaths(tmp_path / "d"), ablations=Path("a.yaml"), max_epochs=2, workers=3,
                             runner=stub)
    seen = [json.loads(p.read_text()) for p in tmp_path.glob("worker-*.json")]
    assert len(seen) == 3 and sorted(codes) == [0, 0, 3]  # every worker waited for, not only the first
    assert all(s["omp"] == "1" and s["mkl"] == "1" for s in seen)
    assert all(s["argv"][2:4] == ["study", "modality"] and s["argv"][s["argv"].index("--max-epochs") + 1] == "2"
               for s in seen)


@pytest.fixture()
def demo_ws(tmp_path, monkeypatch):
    """The demo command with its data steps skipped and each worker run in-process on a stand-in."""
    from studies.engine import run_study
    from studies.options import RunOptions
    from studies.spec import validate

    monkeypatch.chdir(tmp_path)
    doc = {"defaults": {"preset": "tiny"},
           "studies": {"modality": {**fake_worker.ABLATIONS["studies"]["toy"]}}}
    (tmp_path / "ablations.yaml").write_text(yaml.safe_dump(doc))
    data = tmp_path / "demo" / "ravdess" / "Actor_01"
    data.mkdir(parents=True)
    (data / "01-01-01-01-01-01-01.mp4").write_bytes(b"x")
    markers = tmp_path / "markers"
    markers.mkdir()
    calls = {"prepare": [], "workers": []}

    def run_workers(paths, *, ablations, max_epochs, workers):
        calls["workers"].append((ablations, max_epochs, workers))
        opts = RunOptions(data_root=paths.data, storage=paths.storage, tracking_uri=paths.tracking)
        run_study("modality", validate(doc), opts, run_fn=fake_worker.make_run_fn(markers, 0.0), echo=lambda s: None)
        return [0] * workers

    monkeypatch.setattr(demo, "prepare_data", lambda paths, **kw: calls["prepare"].append((paths, kw)))
    monkeypatch.setattr(demo, "run_workers", run_workers)
    # The stand-in units keep no model: the predict step is skipped (no example clips).
    monkeypatch.setattr(demo, "example_clips", lambda paths: calls.setdefault("examples", []).append(paths) or [])
    return tmp_path, calls


def test_demo_command_trains_through_workers_then_reports(demo_ws):
    ws, calls = demo_ws
    result = CliRunner().invoke(cli, ["--ablations", str(ws / "ablations.yaml"), "demo", "--max-epochs", "3"])
    assert result.exit_code == 0, result.output
    ((paths, kwargs),) = calls["prepare"]
    assert paths == demo.DemoPaths(Path("demo")) and kwargs["clips_per_class"] == 2
    assert calls["workers"] == [(ws / "ablations.yaml", 3, 2)]
    table = pd.read_csv(ws / "demo" / "reports" / "modality" / "table.csv")
    assert dict(zip(table["cell"], table["test_uar_mean"].round(6))) == {"modality=audio": 0.55, "modality=av": 0.75}
    readme = (ws / "demo" / "reports" / "modality" / "README.md").read_text()
    assert f"> **{demo.NOTE}**" in readme and "MLflow tracking URI: `sqlite:///demo/mlflow.db`" in readme
    assert "reference cell: `modality=av`" in readme
    assert calls["examples"] == [demo.DemoPaths(Path("demo"))]
    assert result.output.rstrip().endswith("report: demo/reports/modality/README.md\nexplain figures: demo/explain")


def test_example_clips_are_fold_0_test_clips_of_distinct_emotions(tmp_path):
    """Fold 0 of ravdess-6fold tests actors 1-4: the examples come from them, one emotion each."""
    paths = demo.DemoPaths(tmp_path)
    for actor in range(1, 25):
        folder = paths.data / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for emotion in (1, 3):
            for statement in (1, 2):
                (folder / f"01-01-{emotion:02d}-01-{statement:02d}-01-{actor:02d}.mp4").write_bytes(b"")
    picked = demo.example_clips(paths)
    assert [p.name for p in picked] == ["01-01-01-01-01-01-01.mp4", "01-01-03-01-01-01-01.mp4"]


def test_demo_command_exit_codes(demo_ws, monkeypatch):
    from fer.data.face_model import FaceModelError

    ws, _ = demo_ws
    args = ["--ablations", str(ws / "ablations.yaml"), "demo"]
    monkeypatch.setattr(demo, "run_workers", lambda paths, **kw: [0, 1])
    failed = CliRunner().invoke(cli, args)
    assert failed.exit_code == 1 and "error: a study worker failed" in failed.output
    assert not (ws / "demo" / "reports").exists()

    def no_face_model(paths, **kw):
        raise FaceModelError("no BlazeFace model: set FER_FACE_MODEL")

    monkeypatch.setattr(demo, "prepare_data", no_face_model)
    missing = CliRunner().invoke(cli, args)
    assert missing.exit_code == 2 and "error: no BlazeFace model: set FER_FACE_MODEL" in missing.output
