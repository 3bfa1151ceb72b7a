"""B8: ledger claims by 8 concurrent workers, PostgreSQL versus the journal file, in one run.

    .venv/bin/python benchmarks/ledger_claims.py [--workers 8] [--units 120]

Each backend gets a fresh ledger with ``--units`` units enqueued (``Ledger.sync``), then
``--workers`` processes, each with its own ``Ledger`` as a study worker has, start together and
loop as the engine does without the training: ``claim`` a unit, ``complete`` it, until none is
left. Claims/s = units / wall time from the common start to the last worker's end (claim and
complete, the ledger's whole work per unit); latency = one ``claim`` call, p50 and p95 over
every claim (the last, empty one of each worker included). PostgreSQL is a throwaway cluster on
loopback (``tests/studies/pg_server.py``, fsync off as there), the journal file is on the local
disk. Every unit must be claimed exactly once, or the run stops with an error.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "studies"))

NAME = "ledger:bench"


def units(n: int) -> list:
    from studies.grid import Cell, Unit

    return [Unit("bench", Cell(f"c{i}", {"i": i}, config=None), fold=0, seed=0, key=f"key{i}") for i in range(n)]


def worker(storage: str, n_units: int, start, out) -> None:
    """Claim and complete until nothing is left; sends (claim latencies in s, keys claimed, end time)."""
    from studies.ledger import Ledger

    ledger = Ledger(storage, NAME)
    keys = {u.key for u in units(n_units)}
    latencies, claimed = [], []
    start.wait()
    while True:
        t0 = time.perf_counter()
        trial = ledger.claim(keys)
        latencies.append(time.perf_counter() - t0)
        if trial is None:
            break
        claimed.append(trial.user_attrs["unit_key"])
        ledger.complete(trial, 0.0)
    out.put((latencies, claimed, time.time()))


def measure(storage: str, n_workers: int, n_units: int) -> dict:
    from optuna.trial import TrialState

    from studies.ledger import Ledger

    Ledger(storage, NAME).sync(units(n_units), retries=0)
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(n_workers + 1), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(storage, n_units, start, out)) for _ in range(n_workers)]
    for p in procs:
        p.start()
    start.wait()  # every worker has its ledger open
    began = time.time()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    latencies = sorted(x for r in results for x in r[0])
    claimed = Counter(k for r in results for k in r[1])
    if len(claimed) != n_units or set(claimed.values()) != {1}:
        raise SystemExit(f"{storage}: {len(claimed)} units claimed, some more than once: {claimed.most_common(3)}")
    trials = Ledger(storage, NAME).trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n_units
    wall = max(r[2] for r in results) - began
    return {"claims_s": n_units / wall, "p50_ms": 1e3 * statistics.median(latencies),
            "p95_ms": 1e3 * latencies[int(0.95 * (len(latencies) - 1))], "wall_s": wall,
            "per_worker": sorted(len(r[1]) for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--units", type=int, default=120)
    args = parser.parse_args()
    import pg_server

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["journal file"] = measure(str(Path(tmp) / "ledger.journal"), args.workers, args.units)
    with pg_server.postgres_cluster() as cluster:
        rows["PostgreSQL 127.0.0.1"] = measure(cluster.create_database("bench"), args.workers, args.units)
    print(f"{args.workers} workers, {args.units} units each run\n")
    print("| ledger | claims/s | p50 claim (ms) | p95 claim (ms) | wall (s) | units per worker |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['claims_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['wall_s']:.1f} | "
              f"{min(r['per_worker'])}-{max(r['per_worker'])} |")


if __name__ == "__main__":
    main()
