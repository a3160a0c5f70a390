"""Micro-benchmarks: `encoder` (our ViT/SigLIP encoder vs HF), `preprocess` (batched preprocessing vs the
HF image processor). Each module runs as `python -m vit_finetune.bench.<name>`; import the one you need."""
