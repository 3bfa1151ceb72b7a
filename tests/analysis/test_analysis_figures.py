"""Figures by axis type: the plotted values, the files written."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from analysis.figures import confusion_figure, is_numeric_axis, metric_figure, recall_heatmap
from analysis.files import save_figure
from fer.labels import EMOTIONS


def depth_units(make_units):
    rows = []
    for layers in (0, 1, 2, 4):
        for mode in ("frozen", "lora"):
            for fold in range(3):
                uar = 0.5 + 0.02 * layers + (0.03 if mode == "lora" else 0.0) + 0.01 * fold
                rows.append((f"layers={layers},mode={mode}", fold, 0, "FINISHED", {"test/uar": uar},
                             {"layers": layers, "mode": mode}))
    return make_units(rows, axes={"layers": "model.fusion.layers", "mode": "model.fusion.freeze"})


def test_axis_types():
    assert is_numeric_axis(pd.Series([0, 1, 2, 4]))
    assert is_numeric_axis(pd.Series([0.25, 0.5]))
    assert not is_numeric_axis(pd.Series(["audio", "av"]))
    assert not is_numeric_axis(pd.Series([True, False]))
    assert not is_numeric_axis(pd.Series([16, 32, "all"], dtype=object))
    assert not is_numeric_axis(pd.Series([3, 3]))  # one value: nothing to draw a line over
    assert not is_numeric_axis(pd.Series([16, 64, None], dtype=object))  # null k = all patches


def test_numeric_axis_gives_one_line_per_other_axis_value(make_units):
    fig = metric_figure(depth_units(make_units), "test/uar")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "layers" and ax.get_ylabel() == "UAR (%)"
    lines = [line for line in ax.lines if line.get_marker() == "o"]  # caps are lines too
    assert len(lines) == 2
    # mean over folds 0..2 adds 0.01 on average
    frozen = [100 * (0.5 + 0.02 * k + 0.01) for k in (0, 1, 2, 4)]
    assert list(lines[0].get_xdata()) == [0, 1, 2, 4]
    assert lines[0].get_ydata() == pytest.approx(frozen)
    assert lines[1].get_ydata() == pytest.approx([v + 3 for v in frozen])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mode=frozen", "mode=lora"]


def test_categorical_axis_gives_points_with_unit_dots(make_units):
    rows = [(cell, fold, 0, "FINISHED", {"test/war": base + 0.01 * fold}, {"modality": cell})
            for cell, base in (("audio", 0.4), ("visual", 0.5), ("av", 0.7)) for fold in range(4)]
    rows.append(("av", 4, 0, "FAILED", {"test/war": 0.0}, {"modality": "av"}))
    fig = metric_figure(make_units(rows, axes={"modality": "model.modality"}), "test/war", reference="av")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["audio", "visual", "av (ref)"]
    means = [line for line in ax.lines if line.get_marker() == "o"][0]
    assert means.get_ydata() == pytest.approx([100 * (b + 0.015) for b in (0.4, 0.5, 0.7)])
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets()) == 4])
    assert len(dots) == 12 and 0.0 not in dots  # 4 finished units per cell; the FAILED one not drawn


def test_two_categorical_axes_give_one_series_per_second_axis_value(make_units):
    rows = [(f"seg={seg},head={head}", fold, 0, "FINISHED", {"test/uar": 0.5 + 0.1 * i + 0.02 * j + 0.01 * fold},
             {"seg": seg, "head": head})
            for i, seg in enumerate(("attention", "max")) for j, head in enumerate(("mean", "last", "attention"))
            for fold in range(2)]
    units = make_units(rows, axes={"seg": "model.pooling.segment", "head": "model.classifier.pooling"})
    ax = metric_figure(units, "test/uar", reference="seg=max,head=last").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["attention", "max"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "reference", "head=mean", "head=last", "head=attention"]
    series = [line for line in ax.lines if line.get_marker() == "o"]
    assert series[1].get_ydata() == pytest.approx([100 * (0.5 + 0.02 + 0.005), 100 * (0.6 + 0.02 + 0.005)])
    ring = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_sizes().tolist() == [160]]
    assert len(ring) == 1 and ring[0].get_offsets()[0, 1] == pytest.approx(100 * 0.625)


def test_confusion_and_recall_write_the_percentages():
    counts = pd.DataFrame(np.eye(8, dtype=int) * 3, index=EMOTIONS, columns=EMOTIONS)
    counts.loc["calm", "neutral"] = 1  # calm: 3 right, 1 as neutral -> 75 / 25
    fig = confusion_figure(counts, "av")
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in fig.axes[0].texts}
    assert texts[(1, 1)] == "75" and texts[(1, 0)] == "25" and texts[(0, 0)] == "100"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(EMOTIONS)
    assert "25 test clips" in fig.axes[0].get_title()
    recall = pd.DataFrame([[0.5] * 8, [0.25] * 8], index=["audio", "av"], columns=EMOTIONS)
    heat = recall_heatmap(recall, "modality")
    assert sorted({t.get_text() for t in heat.axes[0].texts}) == ["25", "50"]


def test_saved_files_are_a_png_and_a_pdf(make_units, tmp_path):
    """Their bytes across processes: test_report_determinism.py."""
    units = depth_units(make_units)
    first = save_figure(metric_figure(units, "test/uar"), tmp_path / "a" / "uar")
    assert [p.name for p in first] == ["uar.png", "uar.pdf"]
    assert all(p.stat().st_size > 5000 for p in first)
    assert first[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and first[1].read_bytes()[:5] == b"%PDF-"
    assert not list(tmp_path.rglob("*.tmp"))
