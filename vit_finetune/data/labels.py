"""Class labels: which column holds them, the class names, and raw values -> class ids.

Single-label data (`data.task: single_label`) have one class per example: a `ClassLabel` id, a class
name, or an integer (a WebDataset `cls` member). Multi-label data (`data.task: multi_label`) have a
list per example, of `ClassLabel` ids, names or integers; a string holding several names (a
metadata.csv cell) is a JSON list (`["cat", "dog"]`) or names separated by spaces (`cat dog`).
Class names come from the `ClassLabel` feature when there is one; otherwise they are the sorted
distinct values of the train split (integers sorted as numbers, named by their decimal string).

Examples carry class ids: an int (single-label) or a list of ints (multi-label); `multi_hot` turns
the lists into the float rows (K,) that a sigmoid / binary cross-entropy head trains on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

import datasets
import numpy as np

from .errors import DataError

TASKS = ("single_label", "multi_label")
AUTO_COLUMNS = ("label", "labels", "cls")  # tried in this order when no ClassLabel feature exists
AUTO_JSON_KEYS = ("label", "labels")  # keys of a WebDataset `json` member


@dataclass(frozen=True)
class LabelColumn:
    """Where an example's label is: `column`, or `column[key]` in a dict-valued column (`json.labels`)."""

    column: str
    key: str | None = None

    @classmethod
    def parse(cls, name: str) -> "LabelColumn":
        column, _, key = name.partition(".")
        return cls(column, key or None)

    def read(self, example: dict) -> Any:
        value = example.get(self.column)
        if self.key is not None:
            value = value.get(self.key) if isinstance(value, dict) else None
        return value

    def __str__(self) -> str:
        return self.column if self.key is None else f"{self.column}.{self.key}"


def find_label_column(features: datasets.Features, configured: str | None, where: str) -> LabelColumn:
    """The configured column (`data.label_column`), else the one `ClassLabel` feature (or list of them),
    else the first of `AUTO_COLUMNS`, else a `json` column with a `label` / `labels` key."""
    if configured:
        column = LabelColumn.parse(configured)
        if column.column not in features:
            raise DataError(f"{where}: label_column {configured!r} not in columns {list(features)}")
        return column
    class_labels = [name for name, feature in features.items() if feature_names(feature) is not None]
    if len(class_labels) == 1:
        return LabelColumn(class_labels[0])
    found = [name for name in AUTO_COLUMNS if name in features] + _json_label_keys(features)
    if not found or len(class_labels) > 1:
        problem = f"several ClassLabel columns ({class_labels})" if class_labels else "no label column"
        raise DataError(f"{where}: {problem} in columns {list(features)} (looked for a ClassLabel feature, "
                        f"{', '.join(AUTO_COLUMNS)} or json.label); set data.label_column")
    return LabelColumn.parse(found[0])


def _json_label_keys(features: datasets.Features) -> list[str]:
    feature = features.get("json")
    keys = list(feature) if isinstance(feature, dict) else []
    return [f"json.{key}" for key in AUTO_JSON_KEYS if key in keys]


def feature_names(feature: Any) -> list[str] | None:
    """Class names of a `ClassLabel` feature or of a list of them; None for any other feature."""
    if isinstance(feature, (datasets.List, datasets.Sequence, datasets.LargeList)):
        feature = feature.feature
    elif isinstance(feature, list) and len(feature) == 1:
        feature = feature[0]
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def as_list(value: Any) -> list:
    """A multi-label value as a list: lists as they are; a string as a JSON list or space-separated names."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    if isinstance(value, str):
        return json.loads(value) if value.lstrip().startswith("[") else value.split()
    return [value]


def distinct_names(values: Iterable, task: str) -> list[str]:
    """The sorted distinct label values of a split, as class names (integers in numeric order)."""
    flat = {item for value in values for item in (as_list(value) if task == "multi_label" else [value])
            if item is not None}
    if all(isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in flat):
        return [str(item) for item in sorted(flat)]
    return sorted(str(item) for item in flat)


class LabelEncoder:
    """Raw label values -> class ids (int, or list of ints for multi_label), checked against the names.

    `ids_are_positions`: the values are already ids into `names` (a `ClassLabel` column); otherwise
    each value is looked up by its string (a name, or an integer's decimal string).
    """

    def __init__(self, names: list[str], task: str, ids_are_positions: bool):
        self.names, self.task, self.ids_are_positions = list(names), task, ids_are_positions
        self._ids = {name: index for index, name in enumerate(self.names)}

    def encode(self, value: Any, where: str) -> int | list[int]:
        """The class id(s) of one example's label; `where` names the example in errors."""
        if value is None:
            raise DataError(f"{where}: no label")
        if self.task == "single_label":
            if isinstance(value, (list, tuple, np.ndarray)):
                raise DataError(f"{where}: the label is a list {list(value)}; set data.task: multi_label")
            return self._id(value, where)
        return sorted({self._id(item, where) for item in as_list(value)})

    def _id(self, item: Any, where: str) -> int:
        if self.ids_are_positions and isinstance(item, (int, np.integer)):
            if not 0 <= item < len(self.names):
                raise DataError(f"{where}: label id {item} outside the {len(self.names)} classes")
            return int(item)
        if str(item) not in self._ids:
            raise DataError(f"{where}: label {item!r} is not one of the classes {self.names[:20]}"
                            f"{' ...' if len(self.names) > 20 else ''}")
        return self._ids[str(item)]


def multi_hot(ids: list[int], num_labels: int) -> np.ndarray:
    """Class ids -> float32 (num_labels,) with 1.0 at each id."""
    row = np.zeros(num_labels, dtype=np.float32)
    row[list(ids)] = 1.0
    return row
