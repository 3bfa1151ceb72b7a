"""run_unit: splits, class weights, prediction rows, memory; end to end on the synthetic set with
the tiny model, logged through fer.tracking, and the logged metrics recomputed from the CSVs."""

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from fer.data.ravdess import Clip
from fer.labels import EMOTIONS, emotions
from fer.train.loop import Evaluation
from fer.train.metrics import classification_metrics
from fer.train.run import (PeakMemory, inverse_frequency_weights, manifest_hash, prediction_rows, run_unit,
                           split_clips)
from fer.tracking import PREDICTION_COLUMNS, prediction_columns


def clip(actor: int, emotion: int = 0) -> Clip:
    cid = f"01-{emotion + 1:02d}-01-01-01-{actor:02d}"
    return Clip(clip_id=cid, vocal_channel="speech", emotion=emotion, intensity=1, statement=1,
                repetition=1, actor=actor, video_path=None, audio_path=None, audio_from_video=True)


# ---------------------------------------------------------------- pieces (fast)


def test_split_clips_by_fold():
    clips = [clip(a) for a in range(1, 13)]
    fold, by_split = split_clips(clips, "ravdess-6fold", 0)
    assert [c.actor for c in by_split["test"]] == [1, 2, 3, 4]
    assert [c.actor for c in by_split["val"]] == [5, 6, 7, 8]
    assert [c.actor for c in by_split["train"]] == [9, 10, 11, 12]
    assert fold.index == 0


def test_split_without_validation_actors_only_where_the_protocol_has_none():
    clips = [clip(a) for a in range(1, 9)]
    _, by_split = split_clips(clips, "hicmae-6fold", 1)
    assert by_split["val"] == [] and [c.actor for c in by_split["test"]] == [5, 6, 7, 8]
    # ravdess-6fold fold 1 validates on actors 9-12, absent here: an error, not a fallback.
    with pytest.raises(ValueError, match="fold 1 of ravdess-6fold has no val clips"):
        split_clips([clip(a) for a in [*range(1, 9), *range(13, 17)]], "ravdess-6fold", 1)


@pytest.mark.parametrize("fold, match", [(6, "fold 6 does not exist: protocol ravdess-6fold has folds 0..5"),
                                         (-1, "fold -1 does not exist")])
def test_split_bad_fold(fold, match):
    with pytest.raises(ValueError, match=match):
        split_clips([clip(a) for a in range(1, 13)], "ravdess-6fold", fold)


def test_split_without_train_clips():
    with pytest.raises(ValueError, match="has no train clips"):
        split_clips([clip(a) for a in range(1, 9)], "ravdess-6fold", 0)


def test_inverse_frequency_weights():
    # 4 clips: three of class 0, one of class 2 -> n / (2 classes * count) = 4/6 and 4/2.
    w = inverse_frequency_weights([0, 0, 0, 2], 8)
    expected = torch.zeros(8)
    expected[0], expected[2] = 4 / 6, 2.0
    torch.testing.assert_close(w, expected)
    assert w[w > 0].mean() == pytest.approx(4 / 3)  # (4/6 + 2) / 2
    torch.testing.assert_close(inverse_frequency_weights([0, 0, 0, 2], 6), expected[:6])  # CREMA-D's six


def test_prediction_rows_use_emotion_names_and_columns():
    probs = np.array([[0.7, 0.3] + [0] * 6, [0] * 7 + [1.0]])
    ev = Evaluation(loss=0.0, metrics={}, probs=probs, labels=np.array([1, 7]), preds=np.array([0, 7]),
                    actors=np.array([3, 4]), clip_ids=["a", "b"])
    rows = prediction_rows(ev, EMOTIONS)
    assert list(rows[0]) == PREDICTION_COLUMNS
    assert rows[0]["label"] == "calm" and rows[0]["pred"] == "neutral" and rows[0]["actor"] == 3
    assert rows[0]["p_neutral"] == pytest.approx(0.7) and rows[1]["p_surprised"] == 1.0


def test_prediction_rows_of_crema_d_use_its_six_labels():
    labels = emotions("crema-d")
    ev = Evaluation(loss=0.0, metrics={}, probs=np.array([[0.1, 0.6, 0.1, 0.1, 0.05, 0.05]]), labels=np.array([5]),
                    preds=np.array([1]), actors=np.array([1001]), clip_ids=["1001_IEO_SAD_HI"])
    [row] = prediction_rows(ev, labels)
    assert list(row) == prediction_columns(labels) == ["clip_id", "actor", "label", "pred", "p_angry", "p_disgust",
                                                       "p_fearful", "p_happy", "p_neutral", "p_sad"]
    assert (row["label"], row["pred"], row["p_disgust"], row["actor"]) == ("sad", "disgust", 0.6, 1001)


def test_manifest_hash_follows_clips_and_entry_keys():
    a = {"x": Path("/c/prepared/k1/x.npz"), "y": Path("/c/prepared/k1/y.npz")}
    assert manifest_hash(a) == manifest_hash(dict(reversed(a.items())))
    assert manifest_hash(a) != manifest_hash({**a, "y": Path("/c/prepared/k2/y.npz")})
    assert manifest_hash(a) != manifest_hash({"x": a["x"]})


def test_model_gflops_cover_both_branches():
    from fer.config import resolve_config
    from fer.train.memory import ProfileEstimate

    av, audio, visual = (ProfileEstimate(resolve_config("tiny", {"model.modality": m})).gflops_per_clip()
                         for m in ("av", "audio", "visual"))
    assert 0 < audio < av and 0 < visual < av
    # Fusion and head are small next to the encoders: the branches account for most of av.
    assert audio + visual == pytest.approx(av, rel=0.2)


def test_the_logged_flops_reuse_the_memory_plans_profile(monkeypatch):
    """One FLOP count per unit: the profile the memory plan made, else one at the training batch."""
    from fer.config import resolve_config
    from fer.models import profile
    from fer.train.memory import ProfileEstimate, plan_batch

    cfg = resolve_config("tiny", {"train.batch_size": 8})
    built = []
    real_build = profile.build_model
    monkeypatch.setattr(profile, "build_model", lambda *a, **kw: built.append(1) or real_build(*a, **kw))
    planned = ProfileEstimate(cfg)
    assert plan_batch(cfg, 2**40, planned) == (8, 1) and len(built) == 1
    flops = planned.gflops_per_clip()
    assert len(built) == 1 and list(planned.profiles) == [8]
    alone = ProfileEstimate(cfg)
    assert alone.gflops_per_clip() == flops and list(alone.profiles) == [8] and len(built) == 2
    # A batch-norm head cannot run one clip in training mode; the count still comes out.
    bn = ProfileEstimate(resolve_config("tiny", {"model.classifier.norm": "batch"}))
    assert bn.gflops_per_clip() > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="measures CPU memory")
def test_peak_memory_sees_a_transient_allocation():
    with PeakMemory() as memory:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        del block
    assert 150 < memory.mb < 1000


# ---------------------------------------------------------------- end to end (slow)


@pytest.mark.slow
def test_logged_test_metrics_equal_sklearn_on_predictions_csv(recorded_run):
    client, run_id = recorded_run.client, recorded_run.run_id
    logged = client.get_run(run_id).data.metrics
    path = client.download_artifacts(run_id, "predictions_test.csv")
    frame = pd.read_csv(path)
    assert list(frame.columns) == PREDICTION_COLUMNS
    y, p = frame["label"], frame["pred"]
    assert logged["test/war"] == pytest.approx(accuracy_score(y, p))
    assert logged["test/uar"] == pytest.approx(balanced_accuracy_score(y, p))
    assert logged["test/f1"] == pytest.approx(f1_score(y, p, average="macro"))
    for name in EMOTIONS:
        mask = y == name
        assert logged[f"test/recall/{name}"] == pytest.approx((p[mask] == name).mean())
    # pred is the argmax of the probability columns
    probs = frame[[f"p_{e}" for e in EMOTIONS]].to_numpy()
    assert [EMOTIONS[i] for i in probs.argmax(1)] == list(p)
    assert probs.sum(1) == pytest.approx(np.ones(len(frame)), abs=1e-5)
    text = Path(client.download_artifacts(run_id, "confusion_test.csv")).read_text()
    confusion = pd.read_csv(io.StringIO(text), index_col=0)
    assert list(confusion.index) == list(EMOTIONS) == list(confusion.columns)
    np.testing.assert_array_equal(confusion.to_numpy(), confusion_matrix(y, p, labels=list(EMOTIONS)))


@pytest.mark.slow
def test_logged_epochs_and_final_metrics(recorded_run):
    client, run_id, result = recorded_run.client, recorded_run.run_id, recorded_run.result
    history = result.history
    assert [row["epoch"] for row in history] == [1, 2]
    for key in ("train/loss", "val/loss", "val/uar", "val/war", "val/f1"):
        logged = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in logged] == [(r["epoch"], pytest.approx(r[key])) for r in history]
    best = max(history, key=lambda r: r["val/uar"])  # max returns the first of equal values
    metrics = result.metrics
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["val/uar_best"] == pytest.approx(best["val/uar"])
    assert metrics["val/loss_best"] == pytest.approx(best["val/loss"])
    assert metrics["epochs_trained"] == 2
    assert metrics["params/total"] >= metrics["params/trainable"] > 0
    assert metrics["gflops_per_clip"] > 0 and metrics["train/clips_per_s"] > 0
    assert metrics["peak_mem_mb"] > 0
    assert all(np.isfinite(v) for v in metrics.values())
    logged = client.get_run(run_id).data.metrics
    assert {k: logged[k] for k in metrics} == pytest.approx(metrics)
    m = classification_metrics([EMOTIONS.index(r["label"]) for r in result.predictions_test],
                               [EMOTIONS.index(r["pred"]) for r in result.predictions_test])
    np.testing.assert_array_equal(result.confusion_test, m["confusion"])
    assert result.warnings == []
    assert len(result.data_manifest) == 16


@pytest.mark.slow
def test_same_seed_same_run(synth_data, prepared_cache, unit_cfg, recorded_run):
    # The recorded run had no MLflow involvement in training; a rerun without spies or callback
    # must reproduce it exactly.
    again = run_unit(unit_cfg, data_root=synth_data, cache_dir=prepared_cache, fold=0, seed=0)
    first = recorded_run.result
    assert again.predictions_test == first.predictions_test
    assert again.history == first.history
    assert again.data_manifest == first.data_manifest


@pytest.mark.slow
def test_protocol_without_validation_selects_on_test_with_a_warning(synth_data, prepared_cache, unit_cfg):
    cfg = unit_cfg.model_copy(update={"data": unit_cfg.data.model_copy(update={"protocol": "hicmae-6fold"})})
    with pytest.warns(UserWarning, match="hicmae-6fold has no validation actors"):
        result = run_unit(cfg, data_root=synth_data, cache_dir=prepared_cache, fold=0, seed=0,
                          max_epochs=1)
    assert any("selected on the test actors [1, 2, 3, 4]" in w for w in result.warnings)
    assert {r["actor"] for r in result.predictions_val} == {1, 2, 3, 4}
    assert result.metrics["epochs_trained"] == 1
    # One epoch: the selected epoch's test predictions are the final test predictions.
    assert result.metrics["test/uar"] == pytest.approx(result.metrics["val/uar_best"])


@pytest.mark.slow
def test_frozen_unaugmented_encoders_run_once_per_clip_through_the_feature_cache(
        synth_data, prepared_cache, unit_cfg):
    from fer.data.config import AugmentConfig
    from fer.models.model import build_model
    from fer.train.features import EncoderForwardCounter, cached_encoders

    cfg = unit_cfg.model_copy(update={"data": unit_cfg.data.model_copy(update={"augment": AugmentConfig()})})
    cached = cached_encoders(build_model(cfg, device="meta"), cfg)
    assert [e.part for e in cached] == ["audio_encoder", "visual_encoder"]
    # Other tests of the session share this cache and may have built these features already.
    shutil.rmtree(prepared_cache / "features", ignore_errors=True)
    with EncoderForwardCounter() as first:
        a = run_unit(cfg, data_root=synth_data, cache_dir=prepared_cache, fold=0, seed=0, max_epochs=1)
    with EncoderForwardCounter() as second:
        b = run_unit(cfg, data_root=synth_data, cache_dir=prepared_cache, fold=0, seed=0, max_epochs=1)
    assert first.counts["audio"] > 0 and first.counts["visual"] > 0  # the cache was built
    assert second.counts == {"audio": 0, "visual": 0}  # and then only read
    assert b.predictions_test == a.predictions_test
