"""``accelerate launch --multi_gpu --num_processes 2 runner.py study ...`` on CPU: two processes (gloo), one worker.

(Accelerate's ``--cpu`` flag starts one process unless MPI is set up; the worker says so.)

The launched processes train each unit data-parallel; the main process alone claims it in the
ledger and logs it. ``train.batch_size`` is per process, so 2 processes x 4 clips make the same
effective batch of 8 as one process x 8: the same clips per optimizer update, in the same shuffled
order (Accelerate shards each global batch between the processes). The runs still differ a little:
each process seeds the same generators, so the second half of a batch gets other random draws
than in one process (dropout is switched off here, the audio encoder's own draws stay), and the
all-reduce averages two half-batch gradients in another summation order. Stated tolerance: the
first epoch's mean training loss within 5 % (1.6 % apart when written), the test metrics within
0.1 (32 test clips: a clip of one class is 0.031 of UAR, so three clips may flip). Two epochs of
32 training clips leave the model near chance: the loss is the sharper of the two checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import pg_server  # noqa: E402  (free_port)

ROOT = Path(__file__).resolve().parents[2]
SYNTH = dict(actors=12, clips_per_class=1, seconds=1.0, fps=8, size=128, seed=0)  # fold 0: 32 test clips
EPOCHS = 2
STUDY = {"defaults": {"preset": "tiny"},
         "studies": {"acc": {"description": "one cell", "axes": {"model.modality": ["audio"]}, "folds": [0],
                             "seeds": [0], "reference": {"model.modality": "audio"}}}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small synthetic RAVDESS, its clips prepared for the tiny preset, and the ablations file."""
    from fer.config import resolve_config
    from fer.data.prepare import PrepareSettings, ensure_prepared
    from fer.data.ravdess import index_clips
    from fer.data.synth import generate

    root = tmp_path_factory.mktemp("acc")
    generate(root / "ravdess", **SYNTH)
    settings = PrepareSettings.from_data_config(resolve_config("tiny").data)
    ensure_prepared(index_clips(root / "ravdess"), root / "cache", settings, workers=2)
    (root / "ablations.yaml").write_text(yaml.safe_dump(STUDY))
    return root


def study(data: Path, out: Path, *, batch: int, launcher: list[str]) -> str:
    out.mkdir()
    cmd = [*launcher, str(ROOT / "runner.py"), "--ablations", str(data / "ablations.yaml"), "study", "acc",
           "--data-root", str(data / "ravdess"), "--cache", str(data / "cache"), "--max-epochs", str(EPOCHS),
           "--set", f"train.batch_size={batch}", "--set", "train.precision='no'",
           "--set", "model.visual.temporal.dropout=0", "--set", "model.classifier.dropout=0",
           "--storage", str(out / "ledger.journal"), "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}"]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def unit_run(out: Path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("acc")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'unit'", run_view_type=3)
    return client, run


@pytest.mark.slow
def test_accelerate_launch_on_cpu_is_one_worker_logging_each_unit_once_like_one_process(data, tmp_path):
    launched = study(data, tmp_path / "two", batch=4, launcher=[
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(pg_server.free_port())])
    single = study(data, tmp_path / "one", batch=8, launcher=[sys.executable])

    assert launched.count("training (mlflow run") == 1, launched  # one worker: the main process claims
    assert "this worker: 1 finished, 0 failed" in launched and "this worker: 1 finished, 0 failed" in single
    client, two = unit_run(tmp_path / "two")  # exactly one run: the other process logged nothing
    one_client, one = unit_run(tmp_path / "one")
    assert two.info.status == "FINISHED" and two.data.params["train.batch_size"] == "4"
    assert one.data.params["train.batch_size"] == "8"
    # The same clips per optimizer update: 2 processes x 4 = 1 process x 8 (logged by the unit).
    assert (two.data.metrics["train/processes"], two.data.metrics["train/effective_batch"]) == (2, 8)
    assert (one.data.metrics["train/processes"], one.data.metrics["train/effective_batch"]) == (1, 8)
    history = client.get_metric_history(two.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), "each epoch logged once"

    from studies.ledger import Ledger

    (trial,) = Ledger(str(tmp_path / "two" / "ledger.journal"), "ledger:acc").trials()
    assert trial.user_attrs["mlflow_run_id"] == two.info.run_id

    loss_two = next(m.value for m in history if m.step == 1)
    loss_one = next(m.value for m in one_client.get_metric_history(one.info.run_id, "train/loss") if m.step == 1)
    assert loss_two == pytest.approx(loss_one, rel=0.05)
    for name in ("test/uar", "test/war", "test/f1"):
        assert two.data.metrics[name] == pytest.approx(one.data.metrics[name], abs=0.1), name


def test_accelerate_launch_cpu_starting_one_process_for_several_is_said(monkeypatch):
    from studies.engine import _Processes, single_process_cpu_launch

    simple = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert single_process_cpu_launch(simple)  # what `accelerate launch --cpu --num_processes 2` sets
    assert not single_process_cpu_launch({**simple, "WORLD_SIZE": "2"})  # torchrun's processes
    assert not single_process_cpu_launch({**simple, "ACCELERATE_USE_CPU": "False"})
    assert not single_process_cpu_launch({"ACCELERATE_USE_CPU": "True"})  # --num_processes 1
    for name, value in simple.items():
        monkeypatch.setenv(name, value)
    with pytest.warns(UserWarning, match=r"starts ONE process .* accelerate launch --multi_gpu --num_processes N"):
        assert not _Processes().many
