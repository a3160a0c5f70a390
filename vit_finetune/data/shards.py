"""Shard files (WebDataset `*.tar`, `*.parquet` with image bytes): finding them, naming their splits,
and loading them with `datasets`' own `webdataset` / `parquet` builders.

    files = shard_files("shards/train-{00000..00099}.tar")       # or a folder, or a glob
    by_split = split_by_name(files)                              # {"train": [...], "test": [...]}
    stream = load_shards(by_split["train"], streaming=True)      # datasets.IterableDataset

A folder (with its sub-folders) or a pattern names the shards; a pattern is a glob, a brace list
(`{a,b}`) or a zero-padded range (`{00000..00099}`), expanded as bash and webdataset do. The split
of each file is what `datasets` infers from its name (`datasets.data_files.get_data_patterns`:
`train-00000.tar`, `test-00000.tar`, `data/validation-00000-of-00002.parquet`, ...); files with no
split keyword all belong to train.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from pathlib import Path

import datasets
from datasets.data_files import get_data_patterns, resolve_pattern

from .errors import DataError

SHARD_BUILDERS = {".tar": "webdataset", ".parquet": "parquet"}
BRACE = re.compile(r"\{([^{}]*)\}")


def is_pattern(text: str) -> bool:
    return any(char in text for char in "*?[{")


def has_shards(path: Path, depth: int = 2) -> bool:
    """Whether a folder holds shard files, directly or (depth 2) in a sub-folder; not deeper, so that an
    imagefolder's images (two levels down) are never listed for this."""
    if not path.is_dir():
        return False
    entries = [entry for entry in os.scandir(path) if not entry.name.startswith(".")]
    if any(entry.is_file() and _is_shard(Path(entry.name)) for entry in entries):
        return True
    return depth > 1 and any(has_shards(Path(entry.path), depth - 1) for entry in entries if entry.is_dir())


def shard_files(source: str | Path) -> list[Path]:
    """The shard files a folder or a pattern names, sorted; a missing path or no shard is a `DataError`."""
    text = str(source)
    if not is_pattern(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise DataError(f"{path}: does not exist")
        files = sorted(file for file in _walk(path) if _is_shard(file)) if path.is_dir() else [path]
    else:
        files = sorted({Path(match) for expanded in expand_braces(os.path.expanduser(text))
                        for match in _glob_or_literal(expanded)})
    files = [file.resolve() for file in files if _is_shard(file)]
    if not files:
        raise DataError(f"{text}: no shard files ({', '.join(SHARD_BUILDERS)})")
    if len({file.suffix for file in files}) > 1:
        raise DataError(f"{text}: shards of several kinds {sorted({file.suffix for file in files})}; use one")
    return files


def _glob_or_literal(pattern: str) -> list[str]:
    if any(char in pattern for char in "*?["):
        return glob.glob(pattern, recursive=True)
    if not Path(pattern).exists():
        raise DataError(f"{pattern}: shard does not exist")
    return [pattern]


def _walk(folder: Path) -> list[Path]:
    files = []
    for parent, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        files += [Path(parent, name) for name in names if not name.startswith(".")]
    return files


def _is_shard(path: Path) -> bool:
    return path.suffix in SHARD_BUILDERS


def expand_braces(pattern: str) -> list[str]:
    """`a{1,2}b` -> [a1b, a2b]; `x{008..010}` -> [x008, x009, x010] (width kept); nested left to right."""
    match = BRACE.search(pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [expanded for choice in _brace_choices(match.group(1))
            for expanded in expand_braces(head + choice + tail)]


def _brace_choices(body: str) -> list[str]:
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric is None:
        return body.split(",")
    first, last = numeric.groups()
    return [str(n).zfill(len(first)) for n in range(int(first), int(last) + 1)]


def split_by_name(files: list[Path]) -> dict[str, list[str]]:
    """Files grouped by the split `datasets` infers from their names and folders (train by default)."""
    base = Path(os.path.commonpath([str(file.parent) for file in files]))
    wanted = {str(file) for file in files}
    try:
        patterns = get_data_patterns(str(base))
    except FileNotFoundError:
        return {"train": sorted(wanted)}
    splits = {str(split): sorted(wanted & _resolved(split_patterns, base)) for split, split_patterns in patterns.items()}
    splits = {split: split_files for split, split_files in splits.items() if split_files}
    unnamed = wanted - set(itertools.chain.from_iterable(splits.values()))
    if unnamed:
        splits.setdefault("train", [])
        splits["train"] = sorted(set(splits["train"]) | unnamed)
    return splits


def _resolved(patterns: list[str], base: Path) -> set[str]:
    matched = set()
    for pattern in patterns:
        try:
            matched |= {str(Path(path)) for path in resolve_pattern(pattern, str(base))}
        except FileNotFoundError:
            continue
    return matched


def load_shards(files: list[str], streaming: bool, cache_dir: str | None = None):
    """`load_dataset(<webdataset|parquet>, data_files=files)`: a `datasets.IterableDataset` when
    streaming (nothing copied), else a `datasets.Dataset` (Arrow copy of the encoded bytes)."""
    builder = SHARD_BUILDERS[Path(files[0]).suffix]
    try:
        return datasets.load_dataset(builder, data_files={"train": list(files)}, split="train",
                                     streaming=streaming, cache_dir=cache_dir)
    except (ValueError, OSError, IndexError) as err:
        raise DataError(f"{files[0]}{' ...' if len(files) > 1 else ''}: cannot read these {builder} shards: {err}") from err
