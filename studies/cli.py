"""Terminal output of the study commands (rich tables); no logic."""

from __future__ import annotations


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
