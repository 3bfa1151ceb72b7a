"""dashboard and ui bind to 127.0.0.1 unless told otherwise, and point at the project's stores."""

import subprocess
import sys

import optuna_dashboard
from click.testing import CliRunner

from runner import cli


def test_ui_binds_to_localhost_by_default(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    result = CliRunner().invoke(cli, ["ui", "--tracking-uri", "sqlite:///x.db"])
    assert result.exit_code == 0, result.output
    (cmd,) = calls
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:///x.db"


def test_dashboard_binds_to_localhost_by_default(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(optuna_dashboard, "run_server",
                        lambda storage, host, port: seen.update(storage=storage, host=host, port=port))
    result = CliRunner().invoke(cli, ["dashboard", "--storage", str(tmp_path / "l.journal")])
    assert result.exit_code == 0, result.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8080
    assert type(seen["storage"]).__name__ == "JournalStorage"
