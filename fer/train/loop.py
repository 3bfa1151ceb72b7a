"""The training loop of one run: Accelerate, one step function, early stopping on validation UAR.

Per epoch: train on the training loader (mixed precision, gradient accumulation, clipping, one
scheduler step per optimizer update), evaluate on the validation loader, keep the weights of the
best validation UAR so far (safetensors, in host memory). At the end the best weights are
restored and the test loader is evaluated once. The loop knows nothing of MLflow: it reports each
epoch to ``callback.on_epoch_end(epoch, metrics)`` and returns everything else.

A callback may raise to stop the run (e.g. ``optuna.TrialPruned`` from a per-epoch pruner); the
loop lets the exception through.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from fer.labels import EMOTIONS
from fer.train.config import TrainConfig
from fer.train.metrics import classification_metrics
from fer.train.optim import build_optimizer, build_scheduler


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run cannot go on (the study marks the unit FAILED)."""


class EpochCallback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class Evaluation:
    """Predictions of one model on one split, gathered over all processes."""

    loss: float
    metrics: dict  # fer.train.metrics.classification_metrics of labels and preds
    probs: np.ndarray  # (N, 8) softmax probabilities
    labels: np.ndarray  # (N,) true emotion indices
    preds: np.ndarray  # (N,) argmax of probs
    actors: np.ndarray  # (N,)
    clip_ids: list[str]


@dataclass
class FitResult:
    """What one run of :func:`fit` produced."""

    history: list[dict[str, float]]  # one row per epoch: epoch, train/loss, val/loss, val/uar, ...
    best_epoch: int  # 1-based epoch of the best validation UAR (the first, on ties)
    best_val: Evaluation  # the validation split at the best epoch
    test: Evaluation | None  # the test split under the best weights, evaluated once (None: no test loader)
    train_clips_per_s: float  # training clips per second over all processes, evaluation excluded
    effective_batch: int = 0  # clips per optimizer update: batch_size x processes x grad_accum
    processes: int = 1  # data-parallel processes (accelerate launch --num_processes)


def _loss_step(model: nn.Module, batch: dict, loss_fn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The one step: forward a batch, return (mean loss, logits (B, 8))."""
    logits = model(batch)  # (B, 8); autocast comes from accelerator.prepare
    return loss_fn(logits.float(), batch["label"]), logits


def distributed_state():
    """Accelerate's process state, created on first use. Without CUDA the launched processes
    (``accelerate launch --multi_gpu --num_processes N`` or ``torchrun``) join one process group over
    gloo; left to itself, Accelerate would treat each of them as a separate single process."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def make_accelerator(precision: str, grad_accum: int):
    """The Accelerator of a run: mixed precision (fp16 falls back to full precision without a GPU)
    and gradient accumulation. Public so that a benchmark times the loop exactly as ``fit`` runs it."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if precision == "fp16" and not torch.cuda.is_available():
        warnings.warn("train.precision=fp16 needs a GPU; this run trains in full precision",
                      stacklevel=3)
        precision = "no"
    # AcceleratorState is a process-wide singleton that refuses a second mixed precision, and a
    # process may run many units (a study worker, the tests); each unit starts from a fresh one.
    # The distributed state (PartialState: process group, device) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=grad_accum)


class _BestWeights:
    """The weights of the best epoch, serialised with safetensors into host memory.

    Only the tensors training can change are kept (trainable parameters and buffers: frozen
    parts stay bit-identical). Memory rather than a temporary file, so that a unit killed
    mid-run (the study engine resumes such units) leaves nothing behind on disk.
    """

    def __init__(self, model: nn.Module):
        changing = {n for n, p in model.named_parameters() if p.requires_grad}
        changing |= {n for n, _ in model.named_buffers()}
        self.keys = sorted(changing & set(model.state_dict()))
        self.blob: bytes | None = None

    def save(self, model: nn.Module) -> None:
        from safetensors.torch import save

        state = model.state_dict()
        # clone: tied parameters share storage, which safetensors refuses to serialise twice.
        self.blob = save({k: state[k].detach().to("cpu", copy=True).contiguous() for k in self.keys})

    def restore(self, model: nn.Module) -> None:
        from safetensors.torch import load

        result = model.load_state_dict(load(self.blob), strict=False)
        if result.unexpected_keys or set(self.keys) & set(result.missing_keys):
            raise RuntimeError(f"best weights do not fit the model: unexpected {result.unexpected_keys}, "
                               f"missing {result.missing_keys}")


@torch.no_grad()
def evaluate(accelerator, model: nn.Module, loader, loss_fn: nn.Module,
             emotions: Sequence[str] = EMOTIONS) -> Evaluation:
    """Predict every clip of ``loader``; loss and metrics over the whole split (per-class ones
    named by ``emotions``, the model's label set)."""
    model.eval()
    logits, labels, actors, clip_ids = [], [], [], []
    for batch in loader:
        out = model(batch)  # (B, 8)
        gathered = accelerator.gather_for_metrics((out.float(), batch["label"], batch["actor"]))
        logits.append(gathered[0])
        labels.append(gathered[1])
        actors.append(gathered[2])
        clip_ids += accelerator.gather_for_metrics(list(batch["clip_id"]), use_gather_object=True)
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)  # (N, 8), (N,)
    loss = float(loss_fn(all_logits, all_labels))
    probs = all_logits.softmax(-1).cpu().numpy()
    preds = probs.argmax(-1)
    label_arr = all_labels.cpu().numpy()
    return Evaluation(loss=loss, metrics=classification_metrics(label_arr, preds, emotions), probs=probs,
                      labels=label_arr, preds=preds, actors=torch.cat(actors).cpu().numpy(),
                      clip_ids=clip_ids)


def train_epoch(accelerator, model, loader, loss_fn, optimizer, scheduler, *, clip_grad: float | None,
                epoch: int) -> tuple[float, int]:
    """One pass over the training loader; returns (mean loss per clip, clips seen, all processes)."""
    model.train()
    total, clips = torch.zeros((), device=accelerator.device), 0
    for step, batch in enumerate(loader):
        with accelerator.accumulate(model):
            loss, _ = _loss_step(model, batch, loss_fn)
            # Every process checks every process's loss, so all stop together (a lone raise
            # would leave the others waiting in the gradient all-reduce).
            losses = accelerator.gather(loss.detach()[None])
            if not bool(torch.isfinite(losses).all()):
                raise NonFiniteLossError(f"training loss {losses.tolist()} at epoch {epoch}, "
                                         f"step {step + 1}")
            accelerator.backward(loss)
            if accelerator.sync_gradients and clip_grad is not None:
                accelerator.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            # The scheduler counts optimizer updates: none while accumulating, none when the
            # fp16 scaler skipped the update for overflowing gradients.
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        n = len(batch["label"]) * accelerator.num_processes
        total += losses.sum() * len(batch["label"])
        clips += n
    return float(total) / clips, clips


def fit(model: nn.Module, *, train_loader, val_loader, test_loader, cfg: TrainConfig, epochs: int,
        class_weights: torch.Tensor | None = None, callback: EpochCallback | None = None,
        emotions: Sequence[str] = EMOTIONS) -> FitResult:
    """Train ``model``, select the epoch on validation UAR, evaluate the test split once.

    Args:
        model: takes a batch dict, returns logits (B, 8); has ``param_groups()`` -> {part:
            trainable parameters}. Trained in place; holds the best weights on return.
        train_loader: training batches (shuffled; its dataset's ``set_epoch`` is called).
        val_loader: the validation actors: early stopping and the best epoch.
        test_loader: the test actors, iterated once, after training; None in a search.
        cfg: the training settings (precision, accumulation, optimizer, schedule, loss, patience).
        epochs: the most epochs to train.
        class_weights: (8,) weights of the cross-entropy, or None.
        callback: gets ``on_epoch_end(epoch, {"train/loss", "val/loss", "val/uar", "val/war",
            "val/f1"})`` on the main process after every epoch (1-based).
        emotions: the label set of the model's outputs (names the per-class metrics).

    Returns:
        History, best epoch, validation predictions at the best epoch, test predictions.

    Raises:
        NonFiniteLossError: a NaN or infinite training or validation loss.
    """
    accelerator = make_accelerator(cfg.precision, cfg.grad_accum)
    optimizer = build_optimizer(model.param_groups(), lr=cfg.lr, lr_mult=cfg.lr_mult.as_dict(),
                                weight_decay=cfg.weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    if test_loader is not None:
        test_loader = accelerator.prepare(test_loader)
    # The schedule spans every epoch allowed; early stopping ends it early, at a low rate.
    total_steps = epochs * math.ceil(len(train_loader) / cfg.grad_accum)
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup=cfg.warmup)
    weight = None if class_weights is None else class_weights.to(accelerator.device, torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    bare = accelerator.unwrap_model(model)
    best = _BestWeights(bare)
    history: list[dict[str, float]] = []
    best_uar, best_epoch, best_val, since_best = -math.inf, 0, None, 0
    train_time, train_clips = 0.0, 0
    try:
        for epoch in range(1, epochs + 1):
            train_loader.set_epoch(epoch)
            start = time.perf_counter()
            train_loss, clips = train_epoch(accelerator, model, train_loader, loss_fn, optimizer,
                                            scheduler, clip_grad=cfg.clip_grad, epoch=epoch)
            train_time += time.perf_counter() - start
            train_clips += clips
            val = evaluate(accelerator, model, val_loader, loss_fn, emotions)
            if not math.isfinite(val.loss):
                raise NonFiniteLossError(f"validation loss {val.loss} at epoch {epoch}")
            row = {"train/loss": train_loss, "val/loss": val.loss, "val/uar": val.metrics["uar"],
                   "val/war": val.metrics["war"], "val/f1": val.metrics["f1"]}
            history.append({"epoch": epoch, **row})
            if val.metrics["uar"] > best_uar:
                best_uar, best_epoch, best_val, since_best = val.metrics["uar"], epoch, val, 0
                best.save(bare)
            else:
                since_best += 1
            if callback is not None and accelerator.is_main_process:
                callback.on_epoch_end(epoch, row)
            if cfg.patience is not None and since_best >= cfg.patience:
                break
        best.restore(bare)
        test = None if test_loader is None else evaluate(accelerator, model, test_loader, loss_fn, emotions)
    finally:
        accelerator.free_memory()
    return FitResult(history=history, best_epoch=best_epoch, best_val=best_val, test=test,
                     train_clips_per_s=train_clips / train_time,
                     effective_batch=cfg.batch_size * accelerator.num_processes * cfg.grad_accum,
                     processes=accelerator.num_processes)
