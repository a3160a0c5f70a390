"""From-scratch ViT / SigLIP encoder, classifier, and exact Hugging Face weight interop."""

from .config import ClassifierConfig, EncoderConfig, encoder_config_for_size
from .convert import CheckpointError, hf_to_ours, ours_to_hf
from .hub import load_classifier, read_state_dict, resolve_model_dir, save_classifier
from .model import ImageClassifier, VisionEncoder, build_classifier

__all__ = [
    "CheckpointError",
    "ClassifierConfig",
    "EncoderConfig",
    "ImageClassifier",
    "VisionEncoder",
    "build_classifier",
    "encoder_config_for_size",
    "hf_to_ours",
    "load_classifier",
    "ours_to_hf",
    "read_state_dict",
    "resolve_model_dir",
    "save_classifier",
]
