"""An index of shard files read before any image: sample counts and label values, checked.

A stream cannot tell in advance how long it is or which classes it holds, and `datasets`' webdataset
builder stops with an obscure error on an empty first shard. So before training, every shard is
read once for what is small in it:
- WebDataset tars with the standard library's `tarfile`: the member headers (the image bytes are
  skipped over, not read) and the label members (`cls`, or a `json` member's `label` / `labels`);
  samples are grouped by key as `datasets` groups them (`base_plus_ext`);
- Parquet files with pyarrow: the row count from the footer and the label column.
An empty shard, an unreadable one and a sample without an image or a label are `DataError`s naming
the shard (and the sample's key). The reading itself goes through `datasets` (`shards.load_shards`).
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets.packaged_modules.webdataset.webdataset import base_plus_ext

from .errors import DataError
from .images import IMAGE_EXTENSIONS
from .labels import AUTO_JSON_KEYS, LabelColumn

IMAGE_MEMBERS = tuple(extension.lstrip(".") for extension in IMAGE_EXTENSIONS)


@dataclass
class ShardIndex:
    """What the shards of one split hold: per-shard sample counts and every sample's raw label, in order."""

    files: list[str]
    counts: list[int]
    labels: list[Any] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts)


def index_shards(files: list[str], label: LabelColumn) -> ShardIndex:
    """Counts and labels of `files` (all tars or all parquet files), checked; see the module doc."""
    counts, labels = [], []
    for path in files:
        shard_labels = _scan_tar(Path(path), label) if path.endswith(".tar") else _scan_parquet(Path(path), label)
        if not shard_labels:
            raise DataError(f"{path}: empty shard (no samples)")
        counts.append(len(shard_labels))
        labels += shard_labels
    return ShardIndex(files=list(files), counts=counts, labels=labels)


def tar_label_column(path: str) -> LabelColumn:
    """The label member of a tar's first sample: `cls`, else `json` with a `label` / `labels` key."""
    first = next(_tar_samples(Path(path), ("cls", "json")), None)
    if first is None:
        raise DataError(f"{path}: empty shard (no samples)")
    key, members = first
    if "cls" in members:
        return LabelColumn("cls")
    found = [name for name in AUTO_JSON_KEYS if isinstance(members.get("json"), dict) and name in members["json"]]
    if not found:
        raise DataError(f"{path}: sample {key!r} has no label member (.cls, or .json with "
                        f"{' / '.join(AUTO_JSON_KEYS)}); set data.label_column")
    return LabelColumn("json", found[0])


def _scan_tar(path: Path, label: LabelColumn) -> list[Any]:
    labels = []
    for key, members in _tar_samples(path, (label.column,)):
        if not any(name in members for name in IMAGE_MEMBERS):
            raise DataError(f"{path}: sample {key!r} has no image member ({', '.join(IMAGE_MEMBERS)})")
        value = label.read(members)
        if value is None:
            raise DataError(f"{path}: sample {key!r} has no label (member .{label})")
        labels.append(value)
    return labels


def _tar_samples(path: Path, label_members: tuple[str, ...]):
    """(key, {member extension: decoded label or None}) per sample, in file order."""
    current_key, members = None, {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                key, extension = base_plus_ext(info.name) if info.isfile() else (None, None)
                if key is None:
                    continue
                if key != current_key and current_key is not None:
                    yield current_key, members
                    members = {}
                current_key = key
                members[extension] = _read_label(tar, info, extension) if extension in label_members else None
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{path}: not a readable tar file ({err})") from None
    if current_key is not None:
        yield current_key, members


def _read_label(tar: tarfile.TarFile, info: tarfile.TarInfo, extension: str) -> Any:
    data = tar.extractfile(info).read()
    try:
        return json.loads(data) if extension == "json" else int(data)
    except ValueError as err:
        raise DataError(f"{tar.name}: member {info.name}: not a label ({err})") from None


def _scan_parquet(path: Path, label: LabelColumn) -> list[Any]:
    import pyarrow.parquet as pq

    try:
        values = pq.read_table(path, columns=[label.column]).column(label.column).to_pylist()
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: cannot read column {label.column!r} of this parquet file ({err})") from None
    labels = [label.read({label.column: value}) for value in values]
    missing = next((row for row, value in enumerate(labels) if value is None), None)
    if missing is not None:
        raise DataError(f"{path}: row {missing} has no label (column {label})")
    return labels
