"""The augmentation benchmarks: the pipeline benchmark takes data.augment keys; the kornia comparison runs."""

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from data_helpers import make_image_folder


def test_pipeline_benchmark_takes_augment_keys(tmp_path, monkeypatch, capsys):
    from benchmarks import preprocess

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = make_image_folder(tmp_path / "data", per_class=12, size=16)
    keys = ["auto_augment=rand-m9-mstd0.5", "random_erasing.p=0.5", "mixup_alpha=0.8", "cutmix_alpha=1.0"]
    preprocess.main([str(folder), "--pipeline", "--size", "16", "--batch-size", "4"] +
                    [arg for key in keys for arg in ("--augment", key)])
    result = json.loads(capsys.readouterr().out)
    assert result["augment"] == keys and result["images"] > 0 and result["images_per_s"] > 0


def test_kornia_comparison_reports_fidelity_and_speed():
    pytest.importorskip("kornia")
    from benchmarks import augment

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(4)]
    fidelity = augment.fidelity(images)
    assert all(result["ours"]["max_abs"] <= 1 for result in fidelity.values())
    assert fidelity["Brightness 1.5"]["kornia"]["max_abs"] > 1  # kornia's brightness adds, Pillow's multiplies
    speed = augment.speed(augment._to_uint8(images), rounds=2)
    assert all(times["ours"] > 0 and times["kornia"] > 0 for times in speed.values())
