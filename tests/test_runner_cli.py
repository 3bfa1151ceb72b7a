"""The CLI starts fast: --help lists every command and imports no heavy library."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "mlflow", "timm", "optuna", "mediapipe", "pandas")


def help_text(*argv: str) -> tuple[str, list[str]]:
    """What ``python runner.py ARGV --help`` prints, and the heavy modules it imported."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['runner.py', *{list(argv)!r}, '--help']\n"
        "try:\n"
        "    runpy.run_path('runner.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    heavy = out.rsplit("HEAVY=", 1)[1].strip()
    return out, heavy.split(",") if heavy else []


def test_help_lists_commands_without_heavy_imports():
    out, heavy = help_text()
    assert heavy == [], out
    from runner import cli

    for name in cli.commands:
        assert f"  {name}" in out, f"{name} missing from --help"
    assert {"synth", "folds", "prepare", "profile", "weights"} <= set(cli.commands)


@pytest.mark.parametrize("argv", [["weights"], ["weights", "list"], ["weights", "fetch"],
                                  ["weights", "convert-nemo"]])
def test_weights_help_imports_nothing_heavy(argv):
    out, heavy = help_text(*argv)
    assert heavy == [], out
    assert out.startswith(f"Usage: runner.py {' '.join(argv)} ")
    if argv == ["weights"]:
        assert all(f"  {name}" in out for name in ("list", "fetch", "convert-nemo"))
