"""A CREMA-D study's report: six-emotion recall and confusions, the dataset in the caption, and the
raters' majority vote per modality as ``human (majority vote)`` rows over the units' own test clips.

The store holds study ``crema`` (cells audio, visual, av; folds 0 and 1; seed 0) logged as the
engine logs a CREMA-D run; the data root holds a hand-made summary table with ties, so the human
values below are worked out by hand (a tie of k emotions earns 1/k when it holds the shown one).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.figures import metric_figure
from analysis.human import HUMAN
from analysis.load import ReportError, load_study_runs
from analysis.report import write_study_report
from fer.labels import emotions

CREMA = emotions("crema-d")
STUDY = "crema"
CELLS = ("audio", "visual", "av")
# Test clips of each fold (what predictions_test.csv lists), and the votes: voice, face, both.
TEST_CLIPS = {0: ["1001_IEO_ANG_HI", "1002_TIE_ANG_XX", "1001_IEO_SAD_LO", "1002_TIE_HAP_XX", "1002_TIE_NEU_XX"],
              1: ["1003_IOM_DIS_XX", "1003_IOM_FEA_XX"]}
VOTES = {"1001_IEO_ANG_HI": ("A", "A:D", "A"), "1002_TIE_ANG_XX": ("D", "A", "A"), "1001_IEO_SAD_LO": ("N", "S", "S"),
         "1002_TIE_HAP_XX": ("H", "H", "H"), "1002_TIE_NEU_XX": ("N:S", "N", "N"), "1003_IOM_DIS_XX": ("A", "D", "D"),
         "1003_IOM_FEA_XX": ("F", "S", "F:S"),
         "1004_IWW_SAD_XX": ("A", "A", "A")}  # a clip no unit was tested on: never counted
# Per fold (UAR, WAR). Fold 0, visual: anger (0.5 + 1) / 2, sad, happy, neutral 1 -> UAR 0.9375,
# WAR (0.5 + 1 + 1 + 1 + 1) / 5 = 0.9. Audio: anger (1 + 0) / 2, sad 0, happy 1, neutral 0.5 -> 0.5, 0.5.
HUMAN_VALUES = {"audio": {0: (0.5, 0.5), 1: (0.5, 0.5)},
                "visual": {0: (0.9375, 0.9), 1: (0.5, 0.5)},
                "av": {0: (1.0, 1.0), 1: (0.75, 0.75)}}


def unit_uar(cell: str, fold: int) -> float:
    return {"audio": 0.40, "visual": 0.55, "av": 0.60}[cell] + 0.05 * fold


def _log_unit(client, exp, parent, cell: str, fold: int, tmp, confusion_labels=CREMA, data_root=None,
              study=STUDY, dataset="crema-d", uar_shift=0.0) -> str:
    from mlflow.entities import Dataset, DatasetInput, Metric, Param

    labels = emotions(dataset)
    tags = {"mlflow.parentRunId": parent, "study": study, "cell": cell, "fold": str(fold), "seed": "0",
            "dataset": dataset, "protocol": "crema-d-5fold", "unit_key": f"{cell}-{fold}-{dataset}",
            "git_commit": "abc1234", "kind": "unit", "axes": json.dumps({"model.modality": cell})}
    rid = client.create_run(exp, start_time=1_700_000_000_000 + fold, tags=tags).info.run_id
    uar = unit_uar(cell, fold) + uar_shift
    metrics = {"test/uar": uar, "test/war": uar + 0.02, "test/f1": uar - 0.01, "val/uar_best": uar,
               "best_epoch": 1.0, "params/total": 1e6, "params/trainable": 5e5, "gflops_per_clip": 1.0}
    metrics.update({f"test/recall/{e}": 0.1 * k for k, e in enumerate(labels)})
    client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     params=[Param("data.dataset", dataset), Param("data.vocal_channel", "speech"),
                             Param("model.modality", cell)])
    clips = TEST_CLIPS[fold]
    rows = [{"clip_id": c, "actor": int(c[:4]), "label": CREMA[0], "pred": CREMA[0],
             **{f"p_{e}": 1 / 6 for e in CREMA}} for c in clips]
    folder = tmp / rid
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "predictions_test.csv", index=False)
    counts = np.eye(len(confusion_labels), dtype=int) * (fold + 1)
    pd.DataFrame(counts, index=confusion_labels, columns=confusion_labels).to_csv(folder / "confusion_test.csv")
    client.log_artifacts(rid, str(folder))
    if data_root is not None:  # as fer.mlflow_conventions.dataset_input logs it
        source = json.dumps({"uri": str(data_root)})
        client.log_inputs(rid, [DatasetInput(Dataset(name="crema-d-speech", digest="0", source_type="local",
                                                     source=source))])
    client.set_terminated(rid, "FINISHED")
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(tracking uri, data root): study ``crema`` (units logged the data root), ``crema-bad`` (a
    RAVDESS-labelled confusion) and ``crema-elsewhere`` (its logged data root is not on this machine)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("cremad-report")
    data = root / "CREMA-D"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    upload = root / "upload"
    upload.mkdir()
    exp = client.create_experiment(STUDY, artifact_location=(root / "artifacts").as_uri())
    for cell in CELLS:
        parent = client.create_run(exp, tags={"study": STUDY, "cell": cell, "kind": "cell"}).info.run_id
        for fold in TEST_CLIPS:
            _log_unit(client, exp, parent, cell, fold, upload, data_root=data)
    for study, kwargs in (("crema-bad", {"confusion_labels": emotions("ravdess")}),
                          ("crema-elsewhere", {"data_root": root / "elsewhere"})):
        other = client.create_experiment(study, artifact_location=(root / f"artifacts-{study}").as_uri())
        parent = client.create_run(other, tags={"kind": "cell"}).info.run_id
        _log_unit(client, other, parent, "av", 0, upload, study=study, **kwargs)
    # ``both``: the same cells, folds and seed run on CREMA-D and, later, on RAVDESS (other scores).
    both = client.create_experiment("both", artifact_location=(root / "artifacts-both").as_uri())
    for dataset, shift in (("crema-d", 0.0), ("ravdess", 0.2)):
        for cell in ("audio", "av"):
            parent = client.create_run(both, tags={"kind": "cell"}).info.run_id
            for fold in TEST_CLIPS:
                _log_unit(client, both, parent, cell, fold, upload, study="both", dataset=dataset, uar_shift=shift,
                          confusion_labels=emotions(dataset))

    (data / "processedResults").mkdir(parents=True)
    lines = ['"FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel","MultiModalVote","MultiModalLevel"']
    lines += [f'"{c}","{v}","50","{f}","50","{m}","50"' for c, (v, f, m) in VOTES.items()]
    (data / "processedResults" / "summaryTable.csv").write_text("\n".join(lines) + "\n")
    return uri, data


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    uri, data = store
    out = tmp_path_factory.mktemp("out") / STUDY
    write_study_report(STUDY, tracking_uri=uri, out_dir=out, reference="av", cell_order=list(CELLS),
                       command="python runner.py report crema")  # the data root the units logged
    return out


def test_units_carry_the_dataset_and_its_six_recall_columns(store):
    units = load_study_runs(STUDY, store[0], cell_order=list(CELLS))
    assert set(units["dataset"]) == {"crema-d"} and units.attrs["emotions"] == CREMA
    recall = [c for c in units.columns if c.startswith("test/recall/")]
    assert recall == [f"test/recall/{e}" for e in CREMA]
    assert units.attrs["modality"] == {"audio": "audio", "visual": "visual", "av": "av"}
    assert units.attrs["data_roots"] == {"crema-d": str(store[1])}


def test_table_has_a_human_row_per_modality_with_the_hand_computed_votes(report):
    table = pd.read_csv(report / "table.csv").set_index("cell")
    assert list(table.index) == [*CELLS, *(f"{HUMAN}, {m}" for m in CELLS)]
    for modality, folds in HUMAN_VALUES.items():
        row = table.loc[f"{HUMAN}, {modality}"]
        uar, war = [v[0] for v in folds.values()], [v[1] for v in folds.values()]
        assert row["test_uar_mean"] == pytest.approx(np.mean(uar), abs=1e-6)
        assert row["test_uar_std"] == pytest.approx(np.std(uar, ddof=1), abs=1e-6)
        assert row["test_war_mean"] == pytest.approx(np.mean(war), abs=1e-6)
        assert np.isnan(row["test_f1_mean"]) and np.isnan(row["test_uar_p_t"]) and not row["test_uar_significant"]
        assert (row["modality"], row["finished"], row["expected"], row["reference"]) == (modality, 2, 2, False)
        assert np.isnan(row["params_m"])
    # The trained cells are untouched by the extra rows.
    assert table.loc["visual", "test_uar_mean"] == pytest.approx(np.mean([unit_uar("visual", f) for f in (0, 1)]))


def test_markdown_and_latex_show_the_human_rows_and_the_dataset(report):
    md = (report / "table.md").read_text()
    assert f"| {HUMAN}, visual | 2/2 | 71.9 ± 30.9 | 70.0 ± 28.3 | n/a |  |  |  |" in md
    assert f"| {HUMAN}, av | 2/2 | 87.5 ± 17.7 | 87.5 ± 17.7 | n/a |  |  |  |" in md
    # Bold goes to the best trained cell (av, 62.5), never to a human row.
    assert "| av (ref) | 2/2 | **62.5 ± 3.5** |" in md
    assert "on CREMA-D, protocol crema-d-5fold, folds 0, 1, seeds 0" in md
    assert "Human (majority vote): the CREMA-D raters' majority vote from the voice (audio)" in md
    tex = (report / "table.tex").read_text()
    assert r"human (majority vote), audio & 2/2 & 50.0 $\pm$ 0.0 & 50.0 $\pm$ 0.0 & n/a" in tex
    readme = (report / "README.md").read_text()
    assert "- Data: CREMA-D" in readme and "audio 7 clips, visual 7 clips, av 7 clips" in readme


def test_recall_and_confusions_have_the_six_crema_d_emotions(report):
    recall = pd.read_csv(report / "recall.csv", index_col=0)
    assert list(recall.columns) == list(CREMA) and list(recall.index) == list(CELLS)
    assert recall.loc["audio", "sad"] == pytest.approx(0.5)
    counts = pd.read_csv(report / "confusion" / "av_counts.csv", index_col=0)
    assert list(counts.index) == list(CREMA) == list(counts.columns)
    np.testing.assert_array_equal(counts.to_numpy(), np.eye(6, dtype=int) * 3)  # folds 0 and 1: 1 + 2


def test_metric_figure_draws_one_labelled_line_per_modality(store):
    units = load_study_runs(STUDY, store[0], cell_order=list(CELLS))
    fig = metric_figure(units, "test/uar", reference="av", human={"audio": 0.5, "visual": 0.71875})
    ax = fig.axes[0]
    flat = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in flat] == [50.0, 71.875]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"{HUMAN}, audio: 50.0" in labels and f"{HUMAN}, visual: 71.9" in labels


def test_without_the_logged_data_root_the_readme_says_how_to_get_the_human_rows(store, tmp_path):
    write_study_report("crema-elsewhere", tracking_uri=store[0], out_dir=tmp_path / "r")
    assert list(pd.read_csv(tmp_path / "r" / "table.csv")["cell"]) == ["av"]
    assert "give the CREMA-D data root (`report --data-root DIR`)" in (tmp_path / "r" / "README.md").read_text()
    # Given, the data root adds the rows over the unit's test clips (fold 0's five).
    write_study_report("crema-elsewhere", tracking_uri=store[0], out_dir=tmp_path / "d", data_root=store[1])
    table = pd.read_csv(tmp_path / "d" / "table.csv").set_index("cell")
    assert table.loc[f"{HUMAN}, av", "test_uar_mean"] == pytest.approx(1.0) and len(table) == 2


def test_a_data_root_without_the_summary_table_is_named(store, tmp_path):
    with pytest.raises(ReportError, match=r"processedResults/summaryTable.csv: not found"):
        write_study_report(STUDY, tracking_uri=store[0], out_dir=tmp_path / "r", reference="av", data_root=tmp_path)
    assert not (tmp_path / "r").exists()


def test_a_confusion_with_other_labels_than_the_units_dataset_is_refused(store, tmp_path):
    with pytest.raises(ReportError, match=r"must be the crema-d emotion names \['angry', 'disgust'"):
        write_study_report("crema-bad", tracking_uri=store[0], out_dir=tmp_path)


def test_a_study_label_set_is_its_datasets_emotions():
    from analysis.load import study_labels

    assert study_labels(["crema-d"]) == CREMA and study_labels(["ravdess"]) == emotions("ravdess")
    # Both corpora in one study: RAVDESS's eight hold CREMA-D's six, in RAVDESS order.
    assert study_labels(["crema-d", "ravdess"]) == emotions("ravdess")
    with pytest.raises(KeyError, match="unknown dataset 'iemocap'; known datasets: ravdess, crema-d"):
        study_labels(["iemocap"])


def test_a_study_run_on_two_datasets_is_reported_one_dataset_at_a_time(store):
    uri, _ = store
    with pytest.raises(ReportError, match=r"holds units of several datasets \(crema-d, ravdess\): report one at "
                                          r"a time with --dataset crema-d \(or ravdess\)"):
        load_study_runs("both", uri)
    for dataset, shift in (("crema-d", 0.0), ("ravdess", 0.2)):
        units = load_study_runs("both", uri, dataset=dataset)
        assert set(units["dataset"]) == {dataset} and len(units) == 4  # 2 cells x 2 folds, none taken across
        expected = [unit_uar(cell, fold) + shift for cell, fold in zip(units["cell"], units["fold"])]
        assert units["test/uar"].tolist() == pytest.approx(expected)
        assert units.attrs["emotions"] == emotions(dataset)
    with pytest.raises(ReportError, match=r"no unit runs on dataset 'ravdess' \(its units are on: crema-d\)"):
        load_study_runs(STUDY, uri, dataset="ravdess")
