"""What the user looks at, in a browser: screenshots of the MLflow UI and the Optuna dashboard
over a demo's stores (``make demo``, or any folder laid out as ``studies.demo.DemoPaths``).

    .venv/bin/python benchmarks/screenshots.py [--demo demo] [--out demo/screenshots]
    make screenshots                       # the same, DEMO=demo

Starts ``runner.py ui`` and ``runner.py dashboard`` on free ports, waits until both answer, and
saves with headless Chromium (``apt-get install chromium``):

    mlflow-runs.png    the study's experiment: the training-runs table (Dataset, Source columns)
    mlflow-unit.png    one finished unit's run page (params, metrics, dataset, tags)
    optuna-study.png   the dashboard's page of the study's ledger

A tool for looking, not a test: nothing is asserted about the pictures.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studies.demo import STUDY, DemoPaths  # noqa: E402

# Without the networking flags headless Chromium waits on its own update and field-trial calls.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--hide-scrollbars")

# MLflow 3.17's UI opens on its GenAI side unless told (the "Model training" switch, or this).
ML_VIEW = "workflowType=machine_learning"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll ``url`` until it answers 200; stop early when the server process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[2]} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def start(args: list[str], log: Path) -> subprocess.Popen:
    """``runner.py ARGS`` in its own process group (its children go with it), output to ``log``,
    run in ``log``'s folder (where ``mlflow ui`` may leave an empty ``mlruns``)."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, str(ROOT / "runner.py"), *args], cwd=log.parent, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def screenshot(chromium: str, url: str, out: Path, *, size: str, budget_ms: int) -> None:
    """One headless-Chromium screenshot of ``url`` after ``budget_ms`` of virtual time."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
               f"--virtual-time-budget={budget_ms}", f"--screenshot={out}", url]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no {out} for {url}")


def pages(paths: DemoPaths, study: str, ui: str, dashboard: str) -> dict[str, str]:
    """file name -> URL of each page to capture."""
    from mlflow import MlflowClient

    from studies.ledger import open_storage

    client = MlflowClient(tracking_uri=paths.tracking)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise SystemExit(f"error: no MLflow experiment {study!r} in {paths.tracking}; run the study first")
    units = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit' and status = 'FINISHED'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if not units:
        raise SystemExit(f"error: study {study!r} has no finished unit in {paths.tracking}")
    study_id = open_storage(paths.storage).get_study_id_from_name(f"ledger:{study}")
    base = f"#/experiments/{exp.experiment_id}"
    return {"mlflow-runs.png": f"{ui}/{base}/runs?{ML_VIEW}",
            "mlflow-unit.png": f"{ui}/{base}/runs/{units[0].info.run_id}?{ML_VIEW}",
            "optuna-study.png": f"{dashboard}/dashboard/studies/{study_id}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("demo"), help="the demo's folder (make demo's DEMO)")
    parser.add_argument("--study", default=STUDY)
    parser.add_argument("--out", type=Path, default=None, help="default: DEMO/screenshots")
    parser.add_argument("--chromium", default="chromium")
    parser.add_argument("--size", default="1600,1000", help="window width,height in pixels")
    parser.add_argument("--budget-ms", type=int, default=15000, help="virtual time each page gets to render")
    args = parser.parse_args()

    paths = DemoPaths(args.demo.resolve())  # absolute: the servers run in the output folder
    if not (paths.out / "mlflow.db").exists():
        raise SystemExit(f"error: no {paths.out / 'mlflow.db'}; run `make demo` (or pass --demo DIR)")
    out = (args.out or args.demo / "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    ui_port, dash_port = free_port(), free_port()
    ui, dashboard = f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{dash_port}"
    servers = [start(["ui", "--tracking-uri", paths.tracking, "--port", str(ui_port)], out / "ui.log"),
               start(["dashboard", "--storage", paths.storage, "--port", str(dash_port)], out / "dashboard.log")]
    try:
        wait_for(f"{ui}/health", servers[0], timeout=120)
        wait_for(f"{dashboard}/api/studies", servers[1], timeout=120)
        for name, url in pages(paths, args.study, ui, dashboard).items():
            screenshot(args.chromium, url, out / name, size=args.size, budget_ms=args.budget_ms)
            print(f"wrote {out / name}  ({url})")
    finally:
        for proc in servers:
            stop(proc)


if __name__ == "__main__":
    main()
