"""Data sets, image decoding, preprocessing ("feature extractor"), augmentation and collate."""

from .collate import ImageCollator
from .config import AugmentConfig, DataConfig
from .errors import DataError
from .images import ImageFileError, open_image, to_rgb
from .preprocess import PreprocessConfig, pil_to_pixels, preprocess_batch, preprocess_images
from .sources import ImageDataset, ImageSplits, apply_train_augmentation, load_splits

__all__ = [
    "AugmentConfig", "DataConfig", "DataError", "ImageCollator", "ImageDataset", "ImageFileError", "ImageSplits",
    "PreprocessConfig", "apply_train_augmentation", "load_splits", "open_image", "pil_to_pixels",
    "preprocess_batch", "preprocess_images", "to_rgb",
]
