"""Named presets: each is a delta over the defaults of ``fer.config.RunConfig``.

Written as dotted paths (the keys ``--set`` and ``ablations.yaml`` use); ``fer.config.merge``
nests them. Plain data, importing nothing, so ``fer.config`` can read it at import time.
The defaults are already the toy model (tiny encoders, a random 2-layer LFM2 at width 64), so
``tiny`` shrinks the data (size, frames, audio length) and what scales with it (segments, ROI
tokens), and trains in fp32; ``full`` is a delta over ``rtx3050``.

- ``tiny``: every part at toy width (under 5M parameters), 64 px, 8 frames, 4 segments, 2 s of
  audio, 16 ROI patches of 64; tests and the demo.
- ``rtx3050``: SigLIP2 B/16 frozen, FastConformer-large's first 6 layers frozen, LFM2-700M's
  first 6 layers with LoRA; sized to train at batch 8 in bf16 within 8 GB.
- ``full``: the largest sensible configuration: every encoder layer, everything unfrozen, all
  16 LFM2-700M layers.

Checkpoints are named by hub id only. ``python runner.py weights fetch --preset rtx3050``
downloads them into the Hugging Face cache; FastConformer-large is published only as NeMo's
``nvidia/stt_en_fastconformer_ctc_large.nemo``, which the fetch converts into the transformers
format under ``<cache>/weights/nvidia--stt_en_fastconformer_ctc_large/``, where the loaders find
it by the same hub id (``fer.weights.resolver``). ``model.random_weights=true`` (``--random-weights``)
builds a preset's exact architecture without reading any of them.
"""

TINY = {
    "data.size": 64, "data.frames": 8, "data.audio_seconds": 2.0,
    "model.segments": 4,  # 2 frames per segment, as rtx3050's 16 frames / 8 segments: pooling still pools
    "model.visual.roi.k": 16,
    "train.precision": "no",  # bf16 autocast on CPU is slower than fp32 for a model this small
}  # fmt: skip

RTX3050 = {
    "model.audio.encoder": "fastconformer-large", "model.audio.layers": 6,
    "model.audio.pretrained": "nvidia/stt_en_fastconformer_ctc_large",
    "model.visual.encoder": "siglip2-b16", "model.visual.pretrained": "timm/vit_base_patch16_siglip_224.v2_webli",
    "model.fusion.pretrained": "LiquidAI/LFM2-700M", "model.fusion.init": "pretrained", "model.fusion.layers": 6,
    "model.fusion.freeze": "lora",
    "train.memory_budget": "8GB",  # micro-batch and accumulation chosen to fit an RTX 3050's 8 GB
    "train.num_workers": 4,  # loader processes: the GPU does not wait on decoding npz entries
}  # fmt: skip

FULL = {
    **RTX3050,
    "model.audio.layers": None, "model.audio.freeze": False, "model.visual.freeze": False,
    "model.fusion.layers": 16, "model.fusion.freeze": "unfrozen",
    "train.memory_budget": None,  # needs far more than 8 GB: size the GPU, not the batch
}  # fmt: skip

PRESETS: dict[str, dict] = {"tiny": TINY, "rtx3050": RTX3050, "full": FULL}
