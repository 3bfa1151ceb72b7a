"""B2: the harness's training step versus a bare PyTorch loop on the same model and batches.

    .venv/bin/python benchmarks/harness_overhead.py [--steps 40] [--repeats 5]

Harness = ``fer.train.loop.train_epoch`` under Accelerate (the step function, loss gathering and
NaN check, clipping, scheduler). Bare = forward, cross-entropy, backward, clip, AdamW step. Both
start from the same weights and see the same in-memory batches (tiny preset, cached-encoder
inputs), alternating, several repetitions; the overhead is the ratio of medians.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from fer.config import resolve_config
from fer.models.model import build_model
from fer.train.loop import make_accelerator, train_epoch
from fer.train.optim import build_optimizer, build_scheduler


def batches(model, cfg, n: int, size: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        audio = model.audio_encoder(torch.randn(size, int(cfg.data.audio_seconds * cfg.data.sample_rate),
                                                generator=g))
        visual = model.visual_encoder(torch.randn(size, cfg.data.frames, 3, cfg.data.size, cfg.data.size,
                                                  generator=g))
    return [{"audio_feats": audio, "visual_feats": visual, "keypoints": torch.rand(size, cfg.data.frames, 6, 2, generator=g),
             "label": torch.randint(0, 8, (size,), generator=g)} for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = resolve_config("tiny")
    t = cfg.train
    base = build_model(cfg)
    data = batches(base, cfg, args.steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)

    harness_model = copy.deepcopy(base)
    acc = make_accelerator(t.precision, t.grad_accum)
    opt = build_optimizer(harness_model.param_groups(), lr=t.lr, lr_mult=t.lr_mult.as_dict(),
                          weight_decay=t.weight_decay)
    harness_model, opt = acc.prepare(harness_model, opt)
    sched = build_scheduler(opt, total_steps=args.steps * (args.repeats + 1), warmup=t.warmup)

    bare_model = copy.deepcopy(base)
    bare_opt = torch.optim.AdamW([p for p in bare_model.parameters() if p.requires_grad], lr=t.lr,
                                 weight_decay=t.weight_decay, foreach=True)

    def bare_epoch() -> None:
        bare_model.train()
        for batch in data:
            loss = loss_fn(bare_model(batch), batch["label"])
            loss.backward()
            nn.utils.clip_grad_norm_(bare_model.parameters(), t.clip_grad)
            bare_opt.step()
            bare_opt.zero_grad(set_to_none=True)

    def harness_epoch() -> None:
        train_epoch(acc, harness_model, data, loss_fn, opt, sched, clip_grad=t.clip_grad, epoch=1)

    timings = {"bare": [], "harness": []}
    for i in range(args.repeats + 1):  # the first round warms up and is dropped
        for name, fn in (("bare", bare_epoch), ("harness", harness_epoch)):
            start = time.perf_counter()
            fn()
            if i:
                timings[name].append((time.perf_counter() - start) / args.steps)
    bare, harness = statistics.median(timings["bare"]), statistics.median(timings["harness"])
    print(f"| loop | median step time (ms), {args.repeats} x {args.steps} steps, batch 8 |")
    print("|---|---|")
    print(f"| bare PyTorch | {bare * 1e3:.1f} |")
    print(f"| fer harness (`train_epoch` under Accelerate) | {harness * 1e3:.1f} |")
    print(f"\nharness overhead: {(harness / bare - 1) * 100:+.1f}%")


if __name__ == "__main__":
    main()
