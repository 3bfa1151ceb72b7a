"""One run unit as a function: resolved config + fold + seed in, metrics and predictions out.

``run_unit`` indexes the dataset folder (``data.dataset``), splits the clips by the protocol's fold into training,
validation and test actors, prepares whichever clips are missing from the cache (the same cache
as ``runner.py prepare``), builds the datasets (augmentation on the training split only) and a
fresh model, trains with :func:`fer.train.loop.fit` and evaluates the test actors once. Nothing
here knows about MLflow or Optuna; the study engine logs the returned :class:`UnitResult`.

Validation actors alone drive early stopping and the best epoch. A protocol without validation
actors (``hicmae-6fold``) selects on the test fold instead: allowed for comparison with published
numbers, with the protocol's warning printed and returned in ``UnitResult.warnings``. A fold whose
protocol names validation actors of which none are in the data is an error, never a silent
fallback to the test actors.

Several GPUs: ``accelerate launch --num_processes N script.py`` (on CPU: ``--multi_gpu``, which
starts the processes, joined over gloo by ``fer.train.loop.distributed_state``), where every process calls
``run_unit`` with the same arguments, works unchanged. Preparation runs on the main process first
(the others then find the entries cached); each process builds the same seeded model, Accelerate
wraps it in DistributedDataParallel and shards the loaders (the shuffle generator is synchronised
from the main process, the augmentation draws depend only on seed, epoch and clip index);
``train.batch_size`` is per process, so the effective batch is ``batch_size * N * grad_accum``.
Evaluation gathers every process's predictions (padding duplicates dropped), so every process
returns the same ``UnitResult``; only the main process calls the epoch callback, and the caller
should log the result from the main process only. ``peak_mem_mb`` is then the main process's.
"""

from __future__ import annotations

import gc
import hashlib
import json
import resource
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from fer.config import RunConfig
from fer.data.dataset import PreparedClipDataset, make_loader
from fer.data.prepare import PrepareSettings, ensure_prepared
from fer.data.datasets import get_dataset
from fer.data.protocols import Fold, Protocol, get_protocol
from fer.data.ravdess import Clip
from fer.labels import EMOTIONS, emotions
from fer.train.checkpoint import UnitWeights, unit_weights
from fer.train.loop import EpochCallback, Evaluation, distributed_state, fit


@dataclass
class UnitResult:
    """Everything one unit produced; ``fer.tracking.log_unit_result`` logs it.

    ``metrics``: ``test/war``, ``test/uar``, ``test/f1``, ``test/recall/<emotion>``,
    ``best_epoch``, ``epochs_trained``, ``val/{war,uar,f1,loss}_best``, ``params/total``,
    ``params/trainable``, ``gflops_per_clip``, ``train/clips_per_s``, ``train/effective_batch`` (clips
    per optimizer update over all processes), ``train/processes``, ``peak_mem_mb``, ``model_mb``
    (size of the saved tensors of ``weights``, 0 when none are kept).
    """

    metrics: dict[str, float]
    history: list[dict[str, float]]  # per epoch: epoch, train/loss, val/loss, val/uar, val/war, val/f1
    predictions_val: list[dict]  # best epoch; columns fer.tracking.PREDICTION_COLUMNS
    predictions_test: list[dict]  # empty when the run did not evaluate the test actors (a search)
    confusion_test: np.ndarray | None  # (C, C) counts, rows = true, columns = predicted
    data_manifest: str  # hash of the clip ids used and their cache entry keys
    warnings: list[str] = field(default_factory=list)
    weights: UnitWeights | None = None  # best-epoch model as train.save_weights asks; None for "none"
    emotions: tuple[str, ...] = EMOTIONS  # the label set: prediction columns, confusion rows


def split_clips(clips: list[Clip], protocol: Protocol | str, fold: int) -> tuple[Fold, dict[str, list[Clip]]]:
    """The fold's actors and its clips per split ("train", "val", "test").

    ``protocol`` is a Protocol (``fer.data.datasets``: a dataset's, maybe built from its data) or
    the name of a fixed RAVDESS protocol.

    Raises:
        ValueError: fold out of range, or a split the protocol defines that has no clip here
            (validation may be empty only when the protocol has no validation actors at all).
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    protocol_name = protocol.name
    folds = protocol.folds(sorted({c.actor for c in clips}))
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold {fold} does not exist: protocol {protocol_name} has folds "
                         f"0..{len(folds) - 1}")
    chosen = folds[fold]
    split_of = {a: name for name in ("train", "val", "test") for a in getattr(chosen, name)}
    by_split: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    for clip in clips:
        by_split[split_of[clip.actor]].append(clip)
    wanted = protocol.splits[fold]  # (test actors, validation actors) of the full dataset
    for name, declared in (("train", True), ("val", bool(wanted[1])), ("test", True)):
        if declared and not by_split[name]:
            raise ValueError(f"fold {fold} of {protocol_name} has no {name} clips in the data "
                             f"(actors present: {sorted(split_of)}; the protocol's "
                             f"{name} actors here: {list(getattr(chosen, name)) or 'none'})")
    return chosen, by_split


def inverse_frequency_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """(num_classes,) class weights n / (classes present * n_class), mean 1 over the present
    classes; 0 for a class absent from ``labels`` (it has no target to weigh)."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).float()
    present = counts > 0
    weights = torch.zeros(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def prediction_rows(ev: Evaluation, labels: tuple[str, ...]) -> list[dict]:
    """One row per clip: clip_id, actor, label and pred as names from ``labels``, p_<emotion>..."""
    rows = []
    for i, clip_id in enumerate(ev.clip_ids):
        row = {"clip_id": clip_id, "actor": int(ev.actors[i]), "label": labels[int(ev.labels[i])],
               "pred": labels[int(ev.preds[i])]}
        row.update({f"p_{name}": float(p) for name, p in zip(labels, ev.probs[i])})
        rows.append(row)
    return rows


def manifest_hash(entries: dict[str, Path]) -> str:
    """Short hash of (clip id, cache entry key) for every clip of the unit."""
    rows = sorted((cid, path.parent.name) for cid, path in entries.items())
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


class PeakMemory:
    """Peak memory of a block, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors of this process on its device), counter
    reset on entry. CPU: the process's peak resident set size above its size on entry; the Linux
    peak counter (VmHWM) is reset on entry through ``/proc/self/clear_refs``, and where that is
    not allowed the block's growth of ``getrusage`` max RSS is used, which reads 0 when an earlier
    block of the same process peaked higher.
    """

    def __enter__(self) -> PeakMemory:
        self.cuda = torch.cuda.is_available()
        self.mb = 0.0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        self.start_rss = _status_kb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm = True
        except OSError:
            self.hwm = False
            self.start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.mb = torch.cuda.max_memory_allocated() / 2**20
        elif self.hwm:
            self.mb = max(0.0, (_status_kb("VmHWM") - self.start_rss) / 1024)
        else:
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.start_max
            self.mb = max(0.0, grown / 1024)


def _status_kb(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return float(line.split()[1])
    raise OSError(f"/proc/self/status has no {field_name}")


def _warn(message: str, collected: list[str]) -> None:
    warnings.warn(message, stacklevel=3)
    collected.append(message)


def prepare_fold(cfg: RunConfig, *, data_root: str | Path, cache_dir: str | Path, fold: int,
                 prepare_workers: int, notes: list[str],
                 evaluate_test: bool = True) -> tuple[dict[str, list[Clip]], dict[str, Path]]:
    """Index the data, split it by the fold, prepare the missing clips (main process first).

    With ``evaluate_test=False`` (a search) the test actors are not even prepared: their split
    comes back empty, and a protocol without validation actors is refused.

    Returns:
        The prepared clips per split ("train", "val", "test"; "val" empty only under a protocol
        without validation actors) and their cache entries by clip id.

    Raises:
        ValueError: a bad fold, or a split without any prepared clip.
    """
    dataset = get_dataset(cfg.data.dataset)
    protocol = dataset.protocol(cfg.data.protocol, data_root)
    chosen, by_split = split_clips(dataset.index(data_root, cfg.data), protocol, fold)
    if protocol.warning:
        _warn(protocol.warning, notes)
    if not evaluate_test:
        if not by_split["val"]:
            raise ValueError(f"fold {fold} of {protocol.name} has no validation actors: selecting "
                             "without touching the test actors is impossible (use ravdess-6fold)")
        by_split = {**by_split, "test": []}
    needed = [c for clips in by_split.values() for c in clips]
    with distributed_state().main_process_first():
        entries = ensure_prepared(needed, cache_dir, PrepareSettings.from_data_config(cfg.data),
                                  workers=prepare_workers)
    if len(entries) < len(needed):
        _warn(f"{len(needed) - len(entries)} of {len(needed)} clips of fold {fold} could not be "
              f"prepared and are left out (see {Path(cache_dir) / 'prepare-report.json'})", notes)
    splits = {name: [c for c in clips if c.clip_id in entries] for name, clips in by_split.items()}
    for name, clips in splits.items():
        if by_split[name] and not clips:
            raise ValueError(f"fold {fold}: none of the {len(by_split[name])} {name} clips could be prepared")
    if not splits["val"]:
        _warn(f"fold {fold} of {protocol.name} has no validation actors: the epoch is "
              f"selected on the test actors {list(chosen.test)}", notes)
    return splits, entries


def make_loaders(cfg: RunConfig, splits: dict[str, list[Clip]], entries: dict[str, Path], *, seed: int,
                 features: dict, pin_memory: bool) -> dict[str, DataLoader]:
    """Loaders "train" (shuffled, augmented), "val" and "test"; "val" reads the test clips when
    the protocol has no validation actors.

    Training drops a last partial batch (a batch of one breaks batch norm) unless the split is
    smaller than one batch.
    """
    t = cfg.train
    loaders = {}
    for name in ("train", "val", "test"):
        train = name == "train"
        clips = splits[name] or splits["test"]  # empty val: selection on test (prepare_fold warned)
        if not clips:  # no test split: a search, which never evaluates the test actors
            loaders[name] = None
            continue
        dataset = PreparedClipDataset([entries[c.clip_id] for c in clips], cfg.data,
                                      train=train, seed=seed, load_frames=cfg.model.uses_visual,
                                      load_audio=cfg.model.uses_audio, features=features)
        size = t.batch_size if train else (t.eval_batch_size or t.batch_size)
        loaders[name] = make_loader(dataset, size, shuffle=train, seed=seed, num_workers=t.num_workers,
                                    pin_memory=pin_memory, drop_last=train and len(dataset) > size)
    return loaders


def run_unit(cfg: RunConfig, *, data_root: str | Path, cache_dir: str | Path, fold: int, seed: int,
             callback: EpochCallback | None = None, max_epochs: int | None = None,
             prepare_workers: int = 1, evaluate_test: bool = True) -> UnitResult:
    """Train and evaluate one (config, fold, seed) unit.

    Args:
        cfg: the resolved run configuration.
        data_root: RAVDESS folder (real or synthetic).
        cache_dir: prepared-clip cache root; missing entries (and encoder features) are built here,
            and converted checkpoints are found under ``<cache_dir>/weights``.
        fold: fold index of ``cfg.data.protocol``.
        seed: seeds Python, numpy, torch, the model's initialisation, the loader shuffling and
            the augmentation.
        callback: gets ``on_epoch_end(epoch, metrics)`` after every epoch (e.g. an MLflow logger).
        max_epochs: caps ``cfg.train.epochs`` (the schedule is laid out over the capped count).
        prepare_workers: processes for preparing missing clips.
        evaluate_test: False in a search: the test actors are neither prepared nor evaluated, and
            the result has no test metrics (selection uses validation actors only).

    Returns:
        Final metrics, per-epoch history, validation and test predictions, test confusion.

    Raises:
        ValueError: bad fold or a split without clips.
        fer.train.loop.NonFiniteLossError: the loss became NaN or infinite.
        fer.weights.MissingWeightsError: a pretrained checkpoint is not on this machine (before any work).
    """
    from accelerate.utils import set_seed

    from fer.models.model import build_model
    from fer.train.config import parse_budget
    from fer.train.features import prepare_features, prepare_key_of
    from fer.train.memory import ProfileEstimate, plan_batch, run_with_backoff
    from fer.weights import with_local_weights

    # Checkpoints are read from this machine only (no hub call per unit); the config's own ids
    # stay in keys and tracking, the resolved folders are for building the model.
    local = with_local_weights(cfg, cache_dir)
    notes: list[str] = []
    splits, entries = prepare_fold(cfg, data_root=data_root, cache_dir=cache_dir, fold=fold,
                                   prepare_workers=prepare_workers, notes=notes,
                                   evaluate_test=evaluate_test)
    used = {c.clip_id: entries[c.clip_id] for clips in splits.values() for c in clips}
    t, device = cfg.train, distributed_state().device
    labels = emotions(cfg.data.dataset)
    weights = None
    if t.class_weights:
        weights = inverse_frequency_weights([c.emotion for c in splits["train"]], len(labels))
    budget = t.memory_budget if device.type == "cuda" else None  # a GPU budget; CPU runs ignore it
    profile = ProfileEstimate(cfg)  # the memory plan's profiles also give the FLOPs per clip
    micro, accum = plan_batch(cfg, parse_budget(budget), profile) if budget else (t.batch_size, 1)

    def attempt(micro: int, accum: int):
        """Build and train from scratch with this micro-batch (retried smaller on CUDA OOM)."""
        tcfg = t.model_copy(update={"batch_size": micro, "grad_accum": t.grad_accum * accum})
        ucfg = cfg.model_copy(update={"train": tcfg})
        set_seed(seed)
        model = build_model(local.model_copy(update={"train": tcfg}))
        sizes = (sum(p.numel() for p in model.parameters()),
                 sum(p.numel() for p in model.parameters() if p.requires_grad))
        # Frozen, unaugmented encoders run once per clip into the shared feature cache; the
        # datasets then hand their outputs to the model instead of frames or audio.
        with distributed_state().main_process_first():
            features = prepare_features(model, ucfg, used, cache_dir, prepare_key_of(used),
                                        batch_size=tcfg.eval_batch_size or tcfg.batch_size, device=device,
                                        num_workers=tcfg.num_workers)
        # Building features draws from the global generator (loader seeds); reseed so that the
        # training draws (dropout, Gumbel noise) are the same whether or not this run built them.
        set_seed(seed)
        loaders = make_loaders(ucfg, splits, entries, seed=seed, features=features,
                               pin_memory=device.type == "cuda")
        epochs = tcfg.epochs if max_epochs is None else min(tcfg.epochs, max_epochs)
        try:
            fitted = fit(model, train_loader=loaders["train"], val_loader=loaders["val"],
                         test_loader=loaders["test"], cfg=tcfg, epochs=epochs, class_weights=weights,
                         callback=callback, emotions=labels)
            # fit leaves the best epoch's weights in the model; serialised once, here, and logged
            # with the other artifacts at the end (a killed unit leaves no model behind).
            return fitted, sizes, unit_weights(model, cfg, seed=seed, mode=t.save_weights)
        finally:
            del model, loaders
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    with PeakMemory() as memory:
        result, (params_total, params_trainable), saved = run_with_backoff(attempt, micro, accum)

    test, val = result.test, result.best_val
    metrics = {} if test is None else {
        f"test/{k}": float(v) for k, v in test.metrics.items() if k != "confusion"}
    metrics.update({f"val/{k}_best": float(val.metrics[k]) for k in ("war", "uar", "f1")})
    metrics.update({
        "val/loss_best": val.loss,
        "best_epoch": float(result.best_epoch),
        "epochs_trained": float(len(result.history)),
        "params/total": float(params_total),
        "params/trainable": float(params_trainable),
        "gflops_per_clip": profile.gflops_per_clip(),
        "train/clips_per_s": result.train_clips_per_s,
        "train/effective_batch": float(result.effective_batch),
        "train/processes": float(result.processes),
        "peak_mem_mb": memory.mb,
        "model_mb": 0.0 if saved is None else saved.mb,
    })
    return UnitResult(metrics=metrics, history=result.history,
                      predictions_val=prediction_rows(val, labels),
                      predictions_test=[] if test is None else prediction_rows(test, labels),
                      confusion_test=None if test is None else test.metrics["confusion"],
                      data_manifest=manifest_hash(used),
                      warnings=notes, weights=saved, emotions=labels)
