"""Scan an imagefolder layout `<root>/<split>/<class>/**/<image>` into undecoded `datasets` splits.

A split folder with a `metadata.jsonl` / `metadata.csv` is read by `metadata.py` instead. Rules of
the class-folder layout (deterministic, unlike a silent skip): class names are the sorted sub-folder names of each
split and train/test must have the same list; files are taken in sorted path order; files whose
extension is not in `IMAGE_EXTENSIONS` (.txt, .DS_Store, ...) and files lying directly in a split
folder are ignored with one warning; hidden folders are ignored; a class folder without images, an
empty or missing root and a missing split folder raise `DataError`. Whether an image file really is
a readable image is decided later, at decode (`on_bad_image`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import datasets

from .errors import DataError
from .images import IMAGE_EXTENSIONS
from .metadata import find_metadata, scan_metadata_split

logger = logging.getLogger(__name__)


def scan_image_folder(root: str | Path, splits: tuple[str, ...]) -> datasets.DatasetDict:
    """Those of the named splits that exist in an imagefolder tree (the first one, train, must), as
    datasets with `image` (undecoded) and `label` columns (or the columns of a metadata file)."""
    root = Path(root)
    found = split_folders(root)
    if splits[0] not in found:
        raise DataError(f"{root}: no split folder {[splits[0]]} (found {found}); expected <split>/<class>/<image>")
    return datasets.DatasetDict({split: scan_split(root / split) for split in splits if split in found})


def split_folders(root: Path) -> list[str]:
    """The split folders of an imagefolder root, sorted; an empty or missing root is a `DataError`."""
    found = sorted(path.name for path in _subdirs(root))
    if not found:
        raise DataError(f"{root}: empty directory, expected <split>/<class>/<image> folders")
    return found


def scan_split(split_dir: Path) -> datasets.Dataset:
    """One split folder -> Dataset(image: Image(decode=False), label: ClassLabel(sorted class names)),
    or the columns of its `metadata.jsonl` / `metadata.csv` (`metadata.py`)."""
    metadata = find_metadata(split_dir) if split_dir.is_dir() else None
    if metadata is not None:
        return scan_metadata_split(metadata)
    classes = sorted(path.name for path in _subdirs(split_dir))
    if not classes:
        raise DataError(f"{split_dir}: no class folders, expected <class>/<image> inside")
    ignored = [path for path in sorted(split_dir.iterdir()) if path.is_file()]
    paths, labels = [], []
    for label, name in enumerate(classes):
        images, others = _list_class(split_dir / name)
        paths += images
        labels += [label] * len(images)
        ignored += others
    _warn_ignored(split_dir, ignored)
    features = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=classes)})
    table = datasets.Dataset.from_dict({"image": [str(p) for p in paths], "label": labels}, features=features)
    return datasets.Dataset(table.data, info=table.info, fingerprint=_files_fingerprint(paths, labels))


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: directory does not exist")
    return [path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")]


def _list_class(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under `class_dir`, recursively, in sorted order, hidden folders skipped."""
    files = []
    for folder, subfolders, names in os.walk(class_dir):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files += [Path(folder, name) for name in names]
    files.sort()
    images = [path for path in files if path.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise DataError(f"{class_dir}: class folder has no images ({' '.join(IMAGE_EXTENSIONS)})")
    return images, [path for path in files if path.suffix.lower() not in IMAGE_EXTENSIONS]


def _warn_ignored(split_dir: Path, ignored: list[Path]) -> None:
    if ignored:
        shown = ", ".join(str(path.relative_to(split_dir)) for path in ignored[:5])
        logger.warning("%s: ignored %d non-image file(s): %s%s", split_dir, len(ignored), shown,
                       " ..." if len(ignored) > 5 else "")


def _files_fingerprint(paths: list[Path], labels: list[int]) -> str:
    """Hash of every file's path, size, mtime and label: any change to the tree changes it."""
    digest = hashlib.sha256()
    for path, label in zip(paths, labels):
        stat = _stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\t{label}\n".encode())
    return digest.hexdigest()[:32]


def _stat(path: Path) -> os.stat_result:
    """The file's status; the link's own for a symlink that cannot be followed (a loop, a dangling link), which
    the decode step then reports as an unreadable image."""
    try:
        return path.stat()
    except OSError:
        return path.lstat()
