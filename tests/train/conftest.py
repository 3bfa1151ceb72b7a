"""A small synthetic RAVDESS, prepared once per session, and recorded end-to-end unit runs.

12 actors x 8 emotions x 1 clip (1 s, 8 fps, 128 px): under ``ravdess-6fold`` fold 0 tests
actors 1-4, validates on 5-8 and trains on 9-12, so every split is present. The unit run
records which clips each loader's dataset reads, in order, and every feature-cache build and
lookup on the same clock, and logs to a temporary MLflow sqlite store through ``fer.tracking``
exactly as the study engine does. It runs twice: with augmentation (nothing cached) and
without (both encoders fed from the feature cache).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

SYNTH = dict(actors=12, clips_per_class=1, seconds=1.0, fps=8, size=128, seed=0)
# The tiny model with two epochs, and every optional path of a run switched on: class weights,
# gradient accumulation, training augmentation.
OVERRIDES = {"train.precision": "no", "train.epochs": 2, "train.batch_size": 8,
             "train.grad_accum": 2, "train.class_weights": True,
             "data.augment.flip": True, "data.augment.audio_gain": True}


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the machine's cores are shared; results do not depend on it


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    from fer.data.synth import generate

    root = tmp_path_factory.mktemp("train-synth")
    generate(root, **SYNTH)
    return root


@pytest.fixture(scope="session")
def unit_cfg():
    from fer.config import resolve_config

    return resolve_config("tiny", OVERRIDES)


@pytest.fixture(scope="session")
def prepared_cache(synth_data, unit_cfg, tmp_path_factory) -> Path:
    """The cache with every clip prepared, as ``runner.py prepare`` would leave it."""
    from fer.data.prepare import PrepareSettings, ensure_prepared
    from fer.data.ravdess import index_clips

    cache = tmp_path_factory.mktemp("train-cache")
    clips = index_clips(synth_data)
    entries = ensure_prepared(clips, cache, PrepareSettings.from_data_config(unit_cfg.data), workers=2)
    if len(entries) != len(clips):
        pytest.fail(f"only {len(entries)} of {len(clips)} synthetic clips could be prepared")
    return cache


# The same run with the feature cache in use: no augmentation, so both frozen encoders are cached.
CACHED_OVERRIDES = {**OVERRIDES, "data.augment.flip": False, "data.augment.audio_gain": False}


@dataclass
class RecordedRun:
    result: object  # fer.train.run.UnitResult
    loads: list[tuple[int, str, str]]  # (order, loader role, clip_id) per dataset read
    aug: dict[str, bool]  # loader role -> whether its dataset augments
    epochs: list[tuple[int, dict]]  # what the callback received
    client: object  # MlflowClient of the temporary store
    run_id: str
    feature_reads: list[tuple[int, str]]  # (order, clip_id) per feature-cache lookup
    feature_builds: list[tuple[int, list[str]]]  # (order, clip ids asked for) per feature-cache build


class _Recorder:
    """The callback: records each epoch and forwards it to the MLflow UnitLogger."""

    def __init__(self, logger):
        self.logger, self.calls = logger, []

    def on_epoch_end(self, epoch, metrics):
        self.calls.append((epoch, dict(metrics)))
        self.logger.on_epoch_end(epoch, metrics)


class FeatureSpy:
    """Records feature-cache builds (the clips asked for) and lookups (the clip read), numbered
    by the same counter as the dataset reads so that their order can be compared."""

    def __init__(self, counter):
        self.counter, self.reads, self.builds = counter, [], []

    def install(self, mp: pytest.MonkeyPatch) -> None:
        from fer.train.features import FeatureCache

        real_build, real_lookup = FeatureCache.build, FeatureCache.lookup
        spy = self

        def build(cache, encoder, entries, *args, **kwargs):
            spy.builds.append((next(spy.counter), sorted(entries)))
            return real_build(cache, encoder, entries, *args, **kwargs)

        def lookup(cache, clip_id):
            spy.reads.append((next(spy.counter), clip_id))
            return real_lookup(cache, clip_id)

        mp.setattr(FeatureCache, "build", build)
        mp.setattr(FeatureCache, "lookup", lookup)


def record_run(cfg, synth_data, prepared_cache, store) -> RecordedRun:
    """run_unit of ``cfg`` on fold 0 with every dataset read and feature-cache access recorded,
    logged to an MLflow sqlite store in ``store``."""
    from mlflow import MlflowClient

    import fer.train.run as run
    from fer.config import flatten
    from fer.tracking import UnitLogger, ensure_experiment, log_unit_result, start_unit_run

    counter = itertools.count()
    loads: list[tuple[int, str, str]] = []

    class SpyDataset(run.PreparedClipDataset):
        role = "unassigned"

        def __getitem__(self, index):
            item = super().__getitem__(index)
            loads.append((next(counter), self.role, item["clip_id"]))
            return item

    real_fit, aug = run.fit, {}

    def spy_fit(model, *, train_loader, val_loader, test_loader, **kw):
        for role, loader in (("train", train_loader), ("val", val_loader), ("test", test_loader)):
            loader.dataset.role = role
            aug[role] = loader.dataset.visual_aug is not None or loader.dataset.audio_aug is not None
        return real_fit(model, train_loader=train_loader, val_loader=val_loader,
                        test_loader=test_loader, **kw)

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    experiment = ensure_experiment(client, "train-tests")
    run_id = start_unit_run(client, experiment, parent_run_id=None, tags={"kind": "unit"},
                            params=flatten(cfg))
    recorder = _Recorder(UnitLogger(client, run_id))
    features = FeatureSpy(counter)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run, "PreparedClipDataset", SpyDataset)
        mp.setattr(run, "fit", spy_fit)
        features.install(mp)
        result = run.run_unit(cfg, data_root=synth_data, cache_dir=prepared_cache, fold=0,
                              seed=0, callback=recorder)
    log_unit_result(client, run_id, result, config=cfg)
    return RecordedRun(result=result, loads=loads, aug=aug, epochs=recorder.calls, client=client,
                       run_id=run_id, feature_reads=features.reads, feature_builds=features.builds)


@pytest.fixture
def feature_spy(monkeypatch) -> FeatureSpy:
    """A FeatureSpy installed for one test, with a counter of its own."""
    spy = FeatureSpy(itertools.count())
    spy.install(monkeypatch)
    return spy


@pytest.fixture(scope="session")
def recorded_run(synth_data, prepared_cache, unit_cfg, tmp_path_factory) -> RecordedRun:
    """The unit run with augmentation on (so no feature is cached)."""
    return record_run(unit_cfg, synth_data, prepared_cache, tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="session")
def cached_unit_cfg():
    from fer.config import resolve_config

    return resolve_config("tiny", CACHED_OVERRIDES)


@pytest.fixture(scope="session")
def recorded_cached_run(synth_data, prepared_cache, cached_unit_cfg, tmp_path_factory) -> RecordedRun:
    """The unit run with both frozen encoders fed from the feature cache."""
    return record_run(cached_unit_cfg, synth_data, prepared_cache, tmp_path_factory.mktemp("mlflow-cached"))
