"""vit_finetune: fine-tune Vision Transformers (ViT, SigLIP) for image classification."""

__version__ = "0.1.0"
