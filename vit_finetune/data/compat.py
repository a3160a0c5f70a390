"""Adapters for the two private library APIs the data path uses for speed.

Each adapter returns None where a new torch / datasets release no longer has its private API; the
caller then takes a public route that gives identical results, only slower, and a warning says so
once. tests/test_data_compat.py fails with the same message when that happens, so the adapter gets
updated rather than the speed silently lost.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

_STORAGE_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)
_INDICES = "_indices"  # the attribute of a datasets.Dataset that holds its row mapping


def storage_users(tensor: torch.Tensor) -> int | None:
    """How many tensors (views included) use `tensor`'s storage, `tensor` itself counted.

    From the private `torch._C._storage_Use_Count`; None where torch lacks it (the collator's
    buffer pool then never reuses a buffer).
    """
    storage = tensor.untyped_storage()
    if _STORAGE_USE_COUNT is None or not hasattr(storage, "_cdata"):
        _warn_once("torch._C._storage_Use_Count", "torch", "batch buffers are never reused")
        return None
    return _STORAGE_USE_COUNT(storage._cdata) - 1  # less `storage`, made here to ask


def dataset_row_mapping(rows: datasets.Dataset) -> np.ndarray | None:
    """int64 (len(rows),): the row of the underlying Arrow table (`rows.data`) behind each row of `rows`.

    From the private `Dataset._indices`, the mapping that `select` / `shuffle` leave (None there:
    the identity); None where `datasets` no longer keeps it so (the pixel store then reads rows
    through `datasets`).
    """
    try:
        mapping = getattr(rows, _INDICES)
        physical = np.arange(len(rows)) if mapping is None else mapping.column(0).to_numpy().astype(np.int64)
    except (AttributeError, TypeError, ValueError, IndexError, KeyError, NotImplementedError):
        physical = None
    if physical is None or physical.shape != (len(rows),):
        _warn_once("datasets.Dataset._indices", "datasets", "the pixel store reads rows through datasets")
        return None
    return physical


def missing_api_message(api: str, package: str, consequence: str) -> str:
    """What to say when the private `api` of `package` is gone."""
    version = importlib.metadata.version(package)
    return (f"private API {api} disappeared in {package} {version}: the fast path is off ({consequence}); "
            "update the adapter in vit_finetune/data/compat.py")


@functools.cache
def _warn_once(api: str, package: str, consequence: str) -> None:
    logger.warning(missing_api_message(api, package, consequence))
