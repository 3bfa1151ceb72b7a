"""The CLI starts fast: --help lists every command and imports no heavy library."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "mlflow", "timm", "optuna", "mediapipe", "pandas")


def test_help_lists_commands_without_heavy_imports():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['runner.py', '--help']\n"
        "try:\n"
        "    runpy.run_path('runner.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY=\n" in out, out
    from runner import cli

    for name in cli.commands:
        assert f"  {name}" in out, f"{name} missing from --help"
    assert {"synth", "folds", "prepare", "profile"} <= set(cli.commands)
