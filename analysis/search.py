"""Report of an Optuna search (from ``tune``): history, parameter importances, parallel
coordinates, the trials and the best trial's parameters.

    write_search_report("runs/fusion-hparams.journal", "fusion-hparams", out_dir=Path("reports/fusion-hparams"))

The storage is a journal file path (``JournalFileBackend``) or an RDB URL (``sqlite:///``,
``postgresql://``, ...), the same forms the study engine accepts.
"""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path

import yaml

from analysis.files import redact_uri, save_figure, write_text
from analysis.load import ReportError

PLOTS = (("history", "plot_optimization_history", "objective per trial and best value so far"),
         ("importances", "plot_param_importances", "parameter importances (Optuna's default evaluator, completed trials)"),
         ("parallel", "plot_parallel_coordinate", "parallel coordinates of the parameters and the objective"))


def open_storage(storage: str | Path):
    """A journal file path -> ``JournalStorage``; a URL (contains ``://``) -> used as is (RDB).

    Raises:
        ReportError: a journal path that does not exist.
    """
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    text = str(storage)
    if "://" in text:
        return text
    if not Path(text).is_file():
        raise ReportError(f"Optuna journal {text!r} does not exist (pass a journal file path or an RDB URL)")
    return JournalStorage(JournalFileBackend(text))


def load_search(storage: str | Path, study_name: str):
    """Load an Optuna study; an unknown name is a ``ReportError`` listing the stored names."""
    import optuna

    opened = open_storage(storage)
    names = optuna.study.get_all_study_names(storage=opened)
    if study_name not in names:
        raise ReportError(f"no Optuna study {study_name!r} in {redact_uri(str(storage))}; "
                          f"stored: {', '.join(sorted(names)) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=opened)


def best_trial_yaml(study) -> str:
    """The best completed trial as YAML: number, value, params (a dotted-path delta), user attrs."""
    best = study.best_trial
    doc = {"study": study.study_name, "direction": study.direction.name.lower(), "trial": best.number,
           "value": float(best.value), "params": dict(best.params), "user_attrs": dict(best.user_attrs)}
    return yaml.safe_dump(doc, sort_keys=False)


def write_search_report(storage: str | Path, study_name: str, *, out_dir: Path, command: str | None = None) -> list[Path]:
    """Write the search's figures (PNG + PDF), ``trials.csv``, ``best_trial.yaml`` and a README.

    Args:
        storage: Optuna journal file path or RDB URL.
        study_name: the Optuna study (= the search's name).
        out_dir: report folder, conventionally ``reports/<search>``.
        command: command line recorded in the README.

    Returns:
        Every written path, README.md last.

    Raises:
        ReportError: missing storage or study, or no completed trial.
    """
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization.matplotlib as ovm

    out_dir = Path(out_dir)
    study = load_search(storage, study_name)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ReportError(f"Optuna study {study_name!r}: no completed trial among {len(study.trials)}; nothing to report")

    files: list[tuple[Path, str]] = []
    notes = []
    for stem, fn, desc in PLOTS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ax = getattr(ovm, fn)(study)
            except (ValueError, RuntimeError) as exc:
                notes.append(f"`{stem}` not drawn: {exc}")
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        # Optuna draws equal importances (with a warning) when too few trials exist: not a result.
        degenerate = [str(w.message) for w in caught if "will be equal" in str(w.message)]
        if degenerate:
            notes.append(f"`{stem}` not drawn: {degenerate[0]}")
        else:
            files += [(p, desc) for p in save_figure(fig, out_dir / stem)]
        plt.close(fig)

    trials = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs",
                                           "datetime_start", "datetime_complete", "duration")).sort_values("number")
    # A named objective ("mean val UAR") makes Optuna's column value_<name>: keep the one schema.
    trials = trials.rename(columns={c: "value" for c in trials.columns if c.startswith("value_")})
    files.append((write_text(out_dir / "trials.csv", trials.to_csv(index=False, lineterminator="\n")),
                  "every trial: number, state, value, parameters, times"))
    files.append((write_text(out_dir / "best_trial.yaml", best_trial_yaml(study)),
                  "best completed trial: value and parameters (usable as a study-defaults delta)"))

    if command is None:
        command = shlex.join(["python", "runner.py", "report", study_name, "--out", str(out_dir)])
    states = trials["state"].value_counts().sort_index()
    lines = [f"# Search report: {study_name}", "", "Generated from the Optuna storage. Regenerate with:", "",
             "```", command, "```", "",
             f"- Optuna storage: `{redact_uri(str(storage))}`",
             f"- Trials: {len(trials)} ({', '.join(f'{s} {n}' for s, n in states.items())})",
             f"- Direction: {study.direction.name.lower()}; best trial {study.best_trial.number} "
             f"with value {study.best_value:.6f}", *(f"- {n}" for n in notes), "",
             "## Files", "", "| File | Content |", "|:---|:---|"]
    lines += [f"| [{p.name}]({p.name}) | {desc} |" for p, desc in files]
    return [p for p, _ in files] + [write_text(out_dir / "README.md", "\n".join(lines) + "\n")]
