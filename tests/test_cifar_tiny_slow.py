"""The shipped cifar10-tiny recipe on the real CIFAR-10 copy, shortened (slow: ~6 min on 2 cores).

Run with `python -m pytest -m slow`. The full 6 000-step run (66.7 % test accuracy) is in the README;
this is its first fifth, with the same model, optimiser and augmentation.
"""

import json
import pytest

from data_helpers import CIFAR10, needs_cifar10
from vit_finetune.commands.train import main as train_main


@pytest.mark.slow
@needs_cifar10
def test_shipped_tiny_recipe_learns_cifar10(tmp_path):
    output_dir = tmp_path / "run"
    status = train_main(["--config", "cifar10-tiny", f"data.dataset={CIFAR10}", f"training.output_dir={output_dir}",
                         "training.max_steps=1200", "training.eval_steps=600", "training.save_steps=600"])
    assert status == 0
    metrics = json.loads((output_dir / "metrics.json").read_text())
    # the recipe reaches about 50 % at this step count (README); 45 % leaves room for seed-to-seed noise
    assert metrics["test_accuracy"] >= 0.45, f"test accuracy {metrics['test_accuracy']:.3f}"
