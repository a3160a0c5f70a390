"""Imagefolder splits described by a metadata file (the `datasets` imagefolder convention).

A split folder holding `metadata.jsonl` (one JSON object per line) or `metadata.csv` (a header row)
lists its images instead of class folders: each record has a `file_name`, relative to the split
folder, and the other fields become columns, e.g. `{"file_name": "a/1.jpg", "label": "cat"}` or,
for multi-label data, `{"file_name": "1.jpg", "labels": ["cat", "dog"]}` (in a CSV cell: `cat dog`
or `["cat", "dog"]`). Images not listed are ignored, as `datasets` does. A `file_name` that is
absolute or leaves the split folder, a listed file that does not exist, a record without
`file_name` and an unparsable line are `DataError`s naming the metadata file and the line.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import datasets

from .errors import DataError

METADATA_FILES = ("metadata.jsonl", "metadata.csv")


def find_metadata(split_dir: Path) -> Path | None:
    """The split folder's metadata file, None when it has none; both kinds at once are refused."""
    found = [split_dir / name for name in METADATA_FILES if (split_dir / name).is_file()]
    if len(found) > 1:
        raise DataError(f"{split_dir}: both {found[0].name} and {found[1].name}; keep one")
    return found[0] if found else None


def scan_metadata_split(metadata: Path) -> datasets.Dataset:
    """Dataset(image: Image(decode=False), <the metadata's other fields>) in the file's record order."""
    records = _read_records(metadata)
    if not records:
        raise DataError(f"{metadata}: no records")
    paths = [_image_path(metadata, record, line) for line, record in records]
    columns = sorted({key for _, record in records for key in record} - {"file_name"})
    table = {"image": [str(path) for path in paths]}
    table |= {name: [record.get(name) for _, record in records] for name in columns}
    rows = datasets.Dataset.from_dict(table)
    rows = rows.cast_column("image", datasets.Image(decode=False))
    return datasets.Dataset(rows.data, info=rows.info, fingerprint=_fingerprint(metadata, paths))


def _read_records(metadata: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) pairs of a metadata.jsonl / metadata.csv file."""
    if metadata.suffix == ".csv":
        with open(metadata, newline="", encoding="utf-8") as stream:
            records = [(line, dict(row)) for line, row in enumerate(csv.DictReader(stream), start=2)]
        return _integer_columns(records)
    records = []
    for line, text in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        if text.strip():
            records.append((line, _json_record(metadata, line, text)))
    return records


def _json_record(metadata: Path, line: int, text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{metadata}:{line}: not a JSON object ({err})") from None
    if not isinstance(record, dict):
        raise DataError(f"{metadata}:{line}: not a JSON object")
    return record


def _integer_columns(records: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """CSV cells are strings: a column whose every cell is an integer literal becomes integers."""
    names = {key for _, record in records for key in record} - {"file_name"}
    for name in names:
        cells = [record.get(name) for _, record in records]
        if all(cell is not None and cell.strip().lstrip("-").isdigit() for cell in cells):
            for _, record in records:
                record[name] = int(record[name])
    return records


def _image_path(metadata: Path, record: dict, line: int) -> Path:
    name = record.get("file_name")
    if not isinstance(name, str) or not name:
        raise DataError(f"{metadata}:{line}: no file_name")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or "://" in name:
        raise DataError(f"{metadata}:{line}: file_name {name!r} must be a path inside {metadata.parent}")
    path = metadata.parent / relative
    if not path.is_file():
        raise DataError(f"{metadata}:{line}: {path} does not exist")
    return path


def _fingerprint(metadata: Path, paths: list[Path]) -> str:
    """Hash of the metadata file and every listed image's path, size and mtime."""
    digest = hashlib.sha256(metadata.read_bytes())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]
