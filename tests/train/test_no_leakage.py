"""No test-actor clip reaches training, early stopping or epoch selection.

The recorded runs (conftest) log every clip each loader's dataset reads, in order, and every
feature-cache build and lookup on the same clock. Fold 0 of ``ravdess-6fold`` on 12 actors:
test 1-4, validation 5-8, training 9-12. Each check runs on the run with augmentation (nothing
cached) and on the one whose frozen encoders are fed from the feature cache.

In a study the feature cache is built, like the prepared clips, for every clip of the unit
before training: a frozen encoder's label-free pass, stored and read by no one until the test
split is evaluated. What is checked is that nothing training or selection reads (a prepared
clip or a feature file) belongs to a test actor, and that a search neither builds nor reads
anything of theirs.
"""

import pytest
from sklearn.metrics import balanced_accuracy_score

from fer.data.protocols import get_protocol
from fer.labels import EMOTIONS

pytestmark = pytest.mark.slow

FOLD = get_protocol("ravdess-6fold").folds(range(1, 13))[0]


def actor_of(clip_id: str) -> int:
    return int(clip_id.split("-")[-1])


@pytest.fixture(params=["augmented", "feature-cache"])
def any_run(request):
    return request.getfixturevalue({"augmented": "recorded_run", "feature-cache": "recorded_cached_run"}[request.param])


def test_the_fold_is_what_the_protocol_says():
    assert (FOLD.train, FOLD.val, FOLD.test) == ((9, 10, 11, 12), (5, 6, 7, 8), (1, 2, 3, 4))


def test_each_loader_reads_only_its_own_actors(any_run):
    actors = {role: {actor_of(cid) for _, r, cid in any_run.loads if r == role}
              for role in ("train", "val", "test")}
    assert actors["train"] == set(FOLD.train)
    assert actors["val"] == set(FOLD.val)
    assert actors["test"] == set(FOLD.test)
    assert {r for _, r, _ in any_run.loads} == {"train", "val", "test"}


def test_test_clips_are_read_once_after_all_training_and_selection(any_run):
    loads = any_run.loads
    test_reads = [(i, cid) for i, r, cid in loads if r == "test"]
    last_other = max(i for i, r, _ in loads if r != "test")
    assert min(i for i, _ in test_reads) > last_other
    ids = [cid for _, cid in test_reads]
    assert len(ids) == len(set(ids)) == len(FOLD.test) * len(EMOTIONS)


def test_test_features_are_read_only_after_all_training_and_selection(recorded_cached_run):
    run = recorded_cached_run
    assert run.aug == {"train": False, "val": False, "test": False}
    last_other = max(i for i, r, _ in run.loads if r != "test")
    before = {actor_of(cid) for i, cid in run.feature_reads if i < last_other}
    after = [cid for i, cid in run.feature_reads if i > last_other]
    # Training and validation read their own actors' features, audio and visual, every epoch.
    assert before == set(FOLD.train) | set(FOLD.val)
    # The test actors' features: read only after selection, once per clip and encoder.
    assert {actor_of(cid) for cid in after} == set(FOLD.test)
    assert sorted(after) == sorted(2 * [cid for _, r, cid in run.loads if r == "test"])
    # Built (both encoders, every clip of the unit) before any dataset read.
    assert len(run.feature_builds) == 2
    assert max(i for i, _ in run.feature_builds) < min(i for i, _, _ in run.loads)
    assert all({actor_of(c) for c in ids} == set(range(1, 13)) for _, ids in run.feature_builds)


def test_the_augmented_run_caches_nothing(recorded_run):
    assert recorded_run.feature_builds == [] and recorded_run.feature_reads == []


def test_only_the_training_split_is_augmented(recorded_run):
    assert recorded_run.aug == {"train": True, "val": False, "test": False}


def test_selection_used_validation_predictions_only(any_run):
    result = any_run.result
    val_rows = result.predictions_val
    assert {row["actor"] for row in val_rows} == set(FOLD.val)
    assert {row["actor"] for row in result.predictions_test} == set(FOLD.test)
    # The val UAR the loop selected on (callback, at the best epoch) is the UAR of the
    # validation predictions, so no test clip can have entered it.
    best = dict(any_run.epochs)[int(result.metrics["best_epoch"])]
    uar = balanced_accuracy_score([r["label"] for r in val_rows], [r["pred"] for r in val_rows])
    assert best["val/uar"] == pytest.approx(uar)
    assert result.metrics["val/uar_best"] == pytest.approx(uar)


@pytest.mark.parametrize("cfg_fixture", ["unit_cfg", "cached_unit_cfg"], ids=["augmented", "feature-cache"])
def test_a_search_run_never_prepares_or_reads_the_test_actors(synth_data, prepared_cache, cfg_fixture, request,
                                                               monkeypatch, feature_spy):
    import fer.train.run as run

    cfg = request.getfixturevalue(cfg_fixture)
    touched: list[int] = []
    real_ensure = run.ensure_prepared

    def spy_ensure(clips, *args, **kwargs):
        touched.extend(c.actor for c in clips)
        return real_ensure(clips, *args, **kwargs)

    class SpyDataset(run.PreparedClipDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            touched.append(actor_of(item["clip_id"]))
            return item

    monkeypatch.setattr(run, "ensure_prepared", spy_ensure)
    monkeypatch.setattr(run, "PreparedClipDataset", SpyDataset)
    result = run.run_unit(cfg, data_root=synth_data, cache_dir=prepared_cache, fold=0, seed=0,
                          max_epochs=1, evaluate_test=False)
    assert touched and not set(touched) & set(FOLD.test)
    built = {actor_of(cid) for _, ids in feature_spy.builds for cid in ids}
    read = {actor_of(cid) for _, cid in feature_spy.reads}
    if cfg_fixture == "cached_unit_cfg":  # the cache was in use: for the other actors only
        assert built == read == set(FOLD.train) | set(FOLD.val)
    else:
        assert built == read == set()
    assert not any(k.startswith("test/") for k in result.metrics)
    assert result.predictions_test == [] and result.confusion_test is None
    # The selected epoch's UAR is the best of the history and that of the validation predictions.
    val_rows = result.predictions_val
    uar = balanced_accuracy_score([r["label"] for r in val_rows], [r["pred"] for r in val_rows])
    assert result.metrics["val/uar_best"] == max(row["val/uar"] for row in result.history) == pytest.approx(uar)
    assert {r["actor"] for r in val_rows} == set(FOLD.val)


def test_a_search_refuses_a_protocol_without_validation_actors(synth_data, prepared_cache, unit_cfg):
    import fer.train.run as run

    cfg = unit_cfg.model_copy(update={"data": unit_cfg.data.model_copy(update={"protocol": "hicmae-6fold"})})
    with pytest.raises(ValueError, match="no validation actors"):
        run.run_unit(cfg, data_root=synth_data, cache_dir=prepared_cache, fold=0, seed=0, max_epochs=1,
                     evaluate_test=False)
