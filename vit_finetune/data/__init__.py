"""Data sets, image decoding, preprocessing ("feature extractor"), augmentation and collate.

Names are imported lazily (PEP 562), so that `vit_finetune.data.preprocess` / `.images` can be used
without importing `datasets` (prediction starts fast and never needs it).
"""

import importlib

_EXPORTS = {
    "ImageCollator": "collate", "AugmentConfig": "config", "DataConfig": "config", "DataError": "errors",
    "ImageFileError": "images", "open_image": "images", "to_rgb": "images",
    "PreprocessConfig": "preprocess", "pil_to_pixels": "preprocess", "preprocess_batch": "preprocess",
    "preprocess_images": "preprocess", "ImageDataset": "sources", "ImageSplits": "sources",
    "apply_train_augmentation": "sources", "load_splits": "sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
