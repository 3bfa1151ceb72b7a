"""Explain figures: one per predicted clip, from ``fer.explain.Explanation`` arrays.

Rows of a figure: the sampled face crops with the detected face box and the six keypoints; the
same crops with the patches the ROI compression dropped greyed out; the ROI prior's weight map
per frame; the audio log-mel with the segment-pooling weights under it, and the class
probabilities. Built without pyplot and saved by ``analysis.files.save_figure`` (fixed metadata),
so the same clip and model give the same PNG bytes.

    paths = write_explain_figures(clips, out_dir, n_models=3)  # <stem>.png, <stem>.pdf per clip
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analysis.files import safe_name, save_figure
from fer.explain import POOLING_NOTES, Explanation


def _frame_row(fig, spec, row: int, ex: Explanation) -> list:
    t = len(ex.frames)
    return [fig.add_subplot(spec[row, i]) for i in range(t)]


def _kept_mask(ex: Explanation, t: int) -> np.ndarray:
    """(H, W) float: 1 where frame t's pixel lies in a kept patch, else 0."""
    h, w = ex.grid
    keep = np.zeros(h * w, np.float32)
    keep[ex.kept[t]] = 1.0
    size = ex.frames.shape[1]
    return np.kron(keep.reshape(h, w), np.ones((size // h, size // w), np.float32))


def explain_figure(ex: Explanation, probs: dict[str, float], title: str) -> Figure:
    """The figure of one clip.

    Args:
        ex: what the (first) model kept and weighted for the clip.
        probs: probability per emotion (averaged over the models when several).
        title: the figure title (file, prediction, models).
    Returns:
        A matplotlib Figure (no pyplot).
    """
    t = len(ex.frames)
    visual = ex.kept is not None
    rows = (3 if visual else 1) + 1
    fig = Figure(figsize=(max(1.4 * t, 9.0), 1.6 * rows + 1.6))
    spec = fig.add_gridspec(rows, max(t, 2), height_ratios=[1] * (rows - 1) + [1.4], hspace=0.35, wspace=0.05)
    crops = _frame_row(fig, spec, 0, ex)
    for i, ax in enumerate(crops):
        ax.imshow(ex.frames[i], interpolation="nearest")
        x0, y0, x1, y1 = ex.face_boxes[i]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime" if ex.face_detected[i] else "orange",
                               linewidth=1))
        ax.scatter(ex.keypoints[i, :, 0], ex.keypoints[i, :, 1], s=6, color="red")
        ax.set_title(f"frame {i}" + ("" if ex.face_detected[i] else " (no face)"), fontsize=6)
    crops[0].set_ylabel("face, keypoints", fontsize=7)
    if visual:
        k = ex.kept.shape[1]
        kept_axes = _frame_row(fig, spec, 1, ex)
        for i, ax in enumerate(kept_axes):
            shade = 0.25 + 0.75 * _kept_mask(ex, i)[..., None]  # dropped patches darkened
            ax.imshow((ex.frames[i] * shade).astype(np.uint8), interpolation="nearest")
        kept_axes[0].set_ylabel(f"kept k={k}\n({ex.selection})", fontsize=7)
        prior_axes = _frame_row(fig, spec, 2, ex)
        for i, ax in enumerate(prior_axes):
            if ex.prior is None:
                ax.text(0.5, 0.5, "no prior", ha="center", va="center", fontsize=6, transform=ax.transAxes)
            else:
                ax.imshow(ex.prior[i].reshape(ex.grid), cmap="magma", vmin=0.0, vmax=float(ex.prior.max()) or 1.0,
                          interpolation="nearest")
        prior_axes[0].set_ylabel("prior weight" if ex.prior is not None else f"no prior\n({ex.selection})", fontsize=7)
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    bottom = spec[rows - 1, :].subgridspec(2, 2, width_ratios=[3, 1], height_ratios=[2, 1], hspace=0.05, wspace=0.25)
    _audio(fig, bottom, ex)
    bars = fig.add_subplot(bottom[:, 1])
    names = list(probs)
    bars.barh(names, [probs[n] for n in names], color=["C3" if n == max(probs, key=probs.get) else "C0" for n in names])
    bars.set_xlim(0, 1)
    bars.invert_yaxis()
    bars.tick_params(labelsize=6)
    bars.set_title("class probabilities", fontsize=7)
    fig.suptitle(title, fontsize=8)
    return fig


def _audio(fig, spec, ex: Explanation) -> None:
    """Log-mel (top) and the pooling weights of each segment over time (bottom)."""
    mel_ax = fig.add_subplot(spec[0, 0])
    weight_ax = fig.add_subplot(spec[1, 0], sharex=mel_ax)
    if ex.mel is None:
        mel_ax.text(0.5, 0.5, "no audio branch", ha="center", va="center", fontsize=7, transform=mel_ax.transAxes)
        mel_ax.set_xticks([])
        mel_ax.set_yticks([])
        weight_ax.set_axis_off()
        return
    duration = len(ex.mel) * ex.mel_hop_s
    mel_ax.imshow(ex.mel.T, origin="lower", aspect="auto", cmap="viridis", extent=(0, duration, 0, ex.mel.shape[1]),
                  interpolation="nearest")
    note = POOLING_NOTES.get(ex.pooling, ex.pooling)
    mel_ax.set_title(f"audio log-mel; below: {note}, one line per segment", fontsize=7)
    mel_ax.set_ylabel("log-mel bin", fontsize=6)
    mel_ax.tick_params(labelsize=6, labelbottom=False)
    if ex.pooling_weights is None:  # max or learned-query pooling: say so instead of a flat line
        weight_ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=6, transform=weight_ax.transAxes)
    else:
        times = (np.arange(ex.pooling_weights.shape[1]) + 0.5) * ex.audio_frame_s
        for s, weights in enumerate(ex.pooling_weights):
            inside = weights > 0
            weight_ax.plot(times[inside], weights[inside], marker=".", markersize=2, linewidth=0.8, color=f"C{s % 10}")
        weight_ax.set_ylim(0, None)
    weight_ax.set_xlabel("time (s)", fontsize=6)
    weight_ax.tick_params(labelsize=6)


def figure_title(clip, n_models: int) -> str:
    """File, prediction and which model each panel shows (an ensemble's panels are its first model's)."""
    models = ("one model" if n_models == 1 else
              f"probabilities: mean of {n_models} models; ROI and pooling panels: first model")
    return f"{Path(clip.file).name}: {clip.pred} ({clip.probs[clip.pred]:.2f}); {models}"


def write_explain_figures(clips: list, out_dir: Path, n_models: int) -> list[Path]:
    """One figure (PNG and PDF) per predicted clip of ``fer.inference.predict_files(explain=True)``.

    Files are named after the clip's file stem (``_2``, ``_3``... for repeated stems); a clip that
    could not be predicted gets none.

    Args:
        clips: ``ClipPrediction`` list with explanations.
        out_dir: folder to write into (created).
        n_models: models averaged for the probabilities (the title says which panels are whose).
    Returns:
        The written paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for clip in clips:
        if clip.explanation is None:
            continue
        stem = safe_name(Path(clip.file).stem)
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        written += save_figure(explain_figure(clip.explanation, clip.probs, figure_title(clip, n_models)), out_dir / name)
    return written
