"""``runner.py`` itself, with fake_worker's stand-in training in place of ``fer.train.run``.

The several-machines tests start study workers as a user would (the click CLI, its options, the
storage URL and tracking URI as given) without paying for real training; each training touches a
marker file ``<cell>-f<fold>-s<seed>.<pid>.<ns>`` in MARKERS and sleeps SECONDS.

    python cli_worker.py MARKERS SECONDS --ablations A.yaml study NAME --data-root ... --storage ...
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import fake_worker  # noqa: E402


def main() -> None:
    markers, seconds, *args = sys.argv[1:]
    module = types.ModuleType("fer.train.run")
    module.run_unit = fake_worker.make_run_fn(Path(markers), float(seconds))
    sys.modules["fer.train.run"] = module
    from runner import cli

    cli.main(args=args, prog_name="runner.py")


if __name__ == "__main__":
    main()
