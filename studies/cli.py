"""Terminal output of the study commands (rich tables); no logic."""

from __future__ import annotations

from typing import Callable


def print_declared(ablations, echo: Callable[[str], None] = print) -> None:
    """Two lines per declared study (axes and their sizes) and per search (trials, space, folds)."""
    for name, st in ablations.studies.items():
        axes = ", ".join(f"{p} ({len(v)})" for p, v in st.axes.items())
        echo(f"study   {name:<14} {st.description}\n        axes: {axes}")
    for name, se in ablations.searches.items():
        echo(f"search  {name:<14} {se.description}\n        {se.trials} trials over "
             f"{', '.join(se.space)}; folds {se.folds}")


def print_unit_table(name: str, units: list, storage: str) -> None:
    """The dry-run table: one row per unit with its ledger status (``new`` without a ledger)."""
    from rich.console import Console
    from rich.table import Table

    from studies.engine import unit_table
    from studies.ledger import Ledger

    ledger = Ledger.existing(storage, f"ledger:{name}")
    rows = unit_table(ledger, units)
    table = Table(title=f"study {name}: {len(rows)} units")
    for col in ("cell", "fold", "seed", "status", "key"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["cell"], str(r["fold"]), str(r["seed"]), r["status"], r["key"])
    Console().print(table)
