"""Fixtures of the reliability suite: a tiny generated data set and one uninterrupted reference run.

The suite lives in a sub-package; the shared helpers (`data_helpers`, `train_helpers`, `helpers_hf`)
are top-level modules in tests/, so tests/ goes on sys.path here whatever pytest's import mode.
"""

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from data_helpers import make_image_folder  # noqa: E402

from .helpers import CLASSES, run_tree, train_tree  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """4 classes x 12 training images (38 train + 10 validation: 5 steps of batch 8 an epoch), 6 test each."""
    return make_image_folder(tmp_path_factory.mktemp("reliability-data"), classes=CLASSES, per_class=12)


@pytest.fixture(scope="session")
def reference(data_dir, tmp_path_factory) -> Path:
    """The output folder of an uninterrupted 2-epoch run: checkpoint-5, checkpoint-10 and the final model."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    train_tree(run_tree(data_dir, output_dir))
    return output_dir
