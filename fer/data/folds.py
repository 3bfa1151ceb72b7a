"""The ``folds`` command's work: index a dataset folder by name and count clips per fold.

Warnings (the protocol's caveat, files the index skipped) go to stderr, so that with
``--json`` stdout carries exactly one JSON object.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from fer.data.cremad import human_reference
from fer.data.datasets import get_dataset, resolve_protocol


def folds_summary(data_root: str | Path, protocol: str | None, vocal_channel: str,
                  dataset: str = "ravdess") -> dict:
    """Clip and class counts of a dataset folder and the actors and clip counts of each fold.

    Args:
        data_root: the dataset's folder (RAVDESS: ``Actor_NN`` folders anywhere below it).
        protocol: protocol name, None for the dataset's default (``fer.data.datasets``).
        vocal_channel: "speech", "song" or "both".
        dataset: ``fer.data.datasets.DATASETS`` name.

    Returns:
        ``{"protocol", "n_clips", "n_actors", "class_counts": {emotion: int} (every emotion of
        the dataset, in label order), "folds": [{"fold", "train", "val", "test", "n_train",
        "n_val", "n_test"}]}``. Where the dataset has human votes (CREMA-D's summary table),
        each fold also has ``"human"``: ``{"audio" | "visual" | "av": {"uar", "war"}}`` over its
        test clips that have votes (None for a fold without any; clips without votes are
        counted in a warning).

    Raises:
        ProtocolError: unknown protocol name (raised before the folder is read).
        CremaDFileError: CREMA-D's demographics or summary table missing or malformed (named).
    """
    ds = get_dataset(dataset)
    resolve_protocol(dataset, protocol)
    index = ds.scan(data_root, vocal_channel)
    proto = ds.protocol(protocol, data_root)
    if proto.warning:
        _warn(proto.warning)
    for path, reason in index.problems:
        _warn(f"{path}: {reason}")
    if not index.clips:
        _warn(f"no {vocal_channel} clips found under {data_root}")
    per_actor = Counter(c.actor for c in index.clips)
    per_class = Counter(c.emotion for c in index.clips)
    votes = ds.human_votes(data_root)
    folds = []
    for fold in proto.folds(per_actor):
        test = set(fold.test)
        human = {}
        if votes is not None:
            clips = [c for c in index.clips if c.actor in test and c.clip_id in votes]
            unvoted = sum(c.actor in test for c in index.clips) - len(clips)
            if unvoted:
                _warn(f"fold {fold.index}: {unvoted} test clips have no row in the summary table; "
                      "its human reference leaves them out")
            human = {"human": human_reference(clips, votes) if clips else None}
        folds.append({
            "fold": fold.index,
            "train": list(fold.train),
            "val": list(fold.val),
            "test": list(fold.test),
            "n_train": sum(per_actor[a] for a in fold.train),
            "n_val": sum(per_actor[a] for a in fold.val),
            "n_test": sum(per_actor[a] for a in fold.test),
            **human,
        })
    return {
        "protocol": proto.name,
        "n_clips": len(index.clips),
        "n_actors": len(per_actor),
        "class_counts": {name: per_class[i] for i, name in enumerate(ds.emotions)},
        "folds": folds,
    }


def _warn(message: str) -> None:
    # Plain print, not rich: paths may hold "[...]", which rich would read as markup.
    print(f"warning: {message}", file=sys.stderr)


def _ranges(actors: list[int]) -> str:
    """[1, 2, 3, 4, 9, 10] -> '1-4, 9-10'; an empty list -> '-'."""
    if not actors:
        return "-"
    runs: list[list[int]] = []
    for a in actors:
        if runs and a == runs[-1][1] + 1:
            runs[-1][1] = a
        else:
            runs.append([a, a])
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)


def render_folds(summary: dict) -> None:
    """Print a ``folds_summary`` result as two rich tables (classes, folds) to stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"protocol [bold]{summary['protocol']}[/]: {summary['n_clips']} clips, "
                  f"{summary['n_actors']} actors")
    classes = Table(title="clips per class")
    classes.add_column("emotion")
    classes.add_column("clips", justify="right")
    for name, n in summary["class_counts"].items():
        classes.add_row(name, str(n))
    console.print(classes)
    folds = Table(title="folds (actor ids, clip counts)")
    for col in ("fold", "test", "val", "train"):
        folds.add_column(col)
    for col in ("n_test", "n_val", "n_train"):
        folds.add_column(col, justify="right")
    for f in summary["folds"]:
        folds.add_row(str(f["fold"]), _ranges(f["test"]), _ranges(f["val"]), _ranges(f["train"]),
                      str(f["n_test"]), str(f["n_val"]), str(f["n_train"]))
    console.print(folds)
    if any(f.get("human") for f in summary["folds"]):
        human = Table(title="human majority vote, test clips: UAR / WAR %")
        human.add_column("fold")
        for modality in ("audio", "visual", "av"):
            human.add_column(modality, justify="right")
        for f in summary["folds"]:
            h = f.get("human") or {}
            human.add_row(str(f["fold"]), *(f"{100 * h[m]['uar']:.1f} / {100 * h[m]['war']:.1f}" if m in h else "-"
                                            for m in ("audio", "visual", "av")))
        console.print(human)
