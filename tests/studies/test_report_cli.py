"""`report` and `paper` commands on a study trained by the engine (stand-in training)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import yaml
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import fake_worker  # noqa: E402

from runner import cli  # noqa: E402
from studies.engine import run_study  # noqa: E402
from studies.options import RunOptions  # noqa: E402
from studies.spec import validate  # noqa: E402


def test_report_and_paper_from_mlflow_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "ravdess" / "Actor_01"
    data.mkdir(parents=True)
    (data / "01-01-01-01-01-01-01.mp4").write_bytes(b"x")
    doc = {**fake_worker.ABLATIONS,
           "paper": {"tables": {"toy-table": {"study": "toy", "metrics": ["test/uar"], "caption": "Toy."}},
                     "efficiency": {"tiny": {"preset": "tiny"}}}}
    ablations = tmp_path / "ablations.yaml"
    ablations.write_text(yaml.safe_dump(doc))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_study("toy", validate(doc), RunOptions(data_root=tmp_path / "ravdess", storage=str(tmp_path / "l.journal"),
                                                 tracking_uri=tracking),
              run_fn=fake_worker.make_run_fn(tmp_path, 0.0), echo=lambda s: None)

    result = CliRunner().invoke(cli, ["--ablations", str(ablations), "report", "toy", "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "reports" / "toy" / "table.csv")
    # Fold 0 and 1 differ by 0.1 (fake_worker), av is 0.2 above audio: means 0.55 and 0.75.
    assert dict(zip(table["cell"], table["test_uar_mean"].round(6))) == {"modality=audio": 0.55, "modality=av": 0.75}
    assert table.loc[table["cell"] == "modality=av", "reference"].item()  # the declared reference

    result = CliRunner().invoke(cli, ["--ablations", str(ablations), "paper", "--out", str(tmp_path / "paper"),
                                      "--tracking-uri", tracking])
    assert result.exit_code == 0, result.output
    written = {p.name for p in (tmp_path / "paper").iterdir()}
    assert {"toy-table.csv", "toy-table.md", "toy-table.tex", "README.md"} <= written
    efficiency = next(p for p in (tmp_path / "paper").iterdir() if p.name.startswith("efficiency") and p.suffix == ".csv")
    rows = pd.read_csv(efficiency)
    assert len(rows) == 1 and rows.iloc[0, 0] == "tiny"

    missing = CliRunner().invoke(cli, ["--ablations", str(ablations), "report", "toy",
                                       "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}"])
    assert missing.exit_code == 1 and "error:" in missing.output
