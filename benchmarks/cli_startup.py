"""B4: wall time of ``runner.py --help`` and ``runner.py study NAME --dry-run``.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]

Runs each command in a fresh interpreter ``repeats`` times and prints the median and the
heavy modules each one imported (torch, transformers, mlflow, ...), side by side.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "mlflow", "timm", "optuna", "mediapipe", "pandas")
PROBE = (
    "import runpy, sys\n"
    "sys.argv = {argv!r}\n"
    "try:\n    runpy.run_path('runner.py', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "print('HEAVY=' + ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
)


def measure(argv: list[str], repeats: int) -> tuple[float, str]:
    times, heavy = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], cwd=ROOT,
                             capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        heavy = next((l[6:] for l in out.stderr.splitlines() if l.startswith("HEAVY=")), "?")
    return statistics.median(times), heavy or "none"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--study", default="fusion-depth")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            ("runner.py --help", ["runner.py", "--help"]),
            (f"runner.py study {args.study} --dry-run",
             ["runner.py", "study", args.study, "--dry-run", "--storage", f"{tmp}/l.journal"]),
        ]
        print(f"| command | median wall time (s), {args.repeats} runs | heavy modules imported |")
        print("|---|---|---|")
        for label, argv in rows:
            median, heavy = measure(argv, args.repeats)
            print(f"| `{label}` | {median:.3f} | {heavy} |")


if __name__ == "__main__":
    main()
