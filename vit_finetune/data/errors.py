"""The data pipeline's errors: unusable data sets (missing paths, columns, classes, bad images), and a data set
whose classes are not a model's."""

from __future__ import annotations


class DataError(ValueError):
    """A data set that cannot be used as configured; the message names the path, split or column."""


class LabelMismatchError(DataError):
    """The checkpoint's classes differ from the data set's (names or order)."""


def check_labels(model_labels: list[str], data_labels: list[str], checkpoint: str, dataset: str) -> None:
    """Raise `LabelMismatchError` listing both label sets unless they are equal, order included."""
    if list(model_labels) != list(data_labels):
        raise LabelMismatchError(f"the classes of {checkpoint} and of {dataset} differ (names and order must match): "
                                 f"checkpoint {list(model_labels)}, data set {list(data_labels)}")
