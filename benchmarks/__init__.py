"""Benchmarks, one module per measured thing; `suite` runs them all for `scripts/benchmark.py`.

`training` (our train.py path vs the notebook pipeline), `encoder` (our ViT/SigLIP encoder vs HF),
`preprocess` (batched preprocessing vs the HF image processor), `peak` (matmul FLOP/s of this
device) with `flops` (analytic training FLOPs, for MFU), `scaling` (images/s and memory vs image
and batch size), `inference` (eval images/s, predict latency), `profile` (torch.profiler split);
`machine` describes the hardware, `report` writes benchmark.json / benchmark.md. `encoder`,
`preprocess` and `scaling` also run alone as `python -m benchmarks.<name>`.
`augment` compares our augmentation ops with kornia and `memory` counts the activations a training
step keeps with and without checkpointing, `streaming` measures the streaming input path on a generated
set of mixed-size JPEGs (these run alone, outside the suite); `command` is the command line.

Not part of the installed package (setup.cfg installs `vit_finetune*` only): this package imports
`vit_finetune`, nothing in `vit_finetune` imports it (tests/test_layers.py), and it runs from the
repository root. The goals the readings are judged against, and dated results, are in
docs/BENCHMARKS.md.
"""
