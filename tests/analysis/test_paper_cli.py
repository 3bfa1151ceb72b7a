"""`paper` with studies that have not run yet: it writes what it can, lists the rest with the
command that runs each, and exits 0; `--strict` exits 1."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from runner import cli

ABLATIONS = {
    "defaults": {"preset": "tiny"},
    "studies": {name: {"description": name, "axes": {"model.modality": ["audio", "av"]},
                       "reference": {"model.modality": "av"}} for name in ("first", "second")},
    "paper": {"tables": {name: {"study": name, "caption": name} for name in ("first", "second")}},
}


def test_paper_lists_the_tables_whose_studies_have_not_run_and_strict_fails(tmp_path):
    path = tmp_path / "ablations.yaml"
    path.write_text(yaml.safe_dump(ABLATIONS))
    args = ["--ablations", str(path), "paper", "--out", str(tmp_path / "paper"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "wrote 1 files to" in result.output
    for name in ("first", "second"):
        assert f"not written: table {name}: no MLflow experiment named '{name}'" in result.output
        assert f"  run it: python runner.py study {name} --data-root DIR" in result.output
    readme = (tmp_path / "paper" / "README.md").read_text()
    assert "## Not written yet" in readme and "Run: `python runner.py study second --data-root DIR`" in readme

    strict = CliRunner().invoke(cli, [*args, "--strict"])
    assert strict.exit_code == 1
    assert strict.output.splitlines()[-1] == "error: --strict: 2 of 2 paper tables missing (first, second)"
    assert "Traceback" not in strict.output
