"""The fine-tuning methods on two CPU processes (torchrun, gloo): a LoRA run with layer-wise learning rates and
an EMA gives the single-process merged model, adapter and averaged weights at the same global batch."""

import yaml
import pytest
import torch
from safetensors.torch import load_file

from helpers_hf import make_hf_vit_checkpoint
from test_multiprocess import LAUNCHERS, SCRIPT, STEPS_PER_EPOCH, data, run, run_tree  # noqa: F401  (fixture)
from vit_finetune.config import run_config_from_dict
from vit_finetune.training.ema import EMA_FILE
from vit_finetune.training.lora import ADAPTER_DIR
from vit_finetune.training.run import train

EPOCHS = 2
FINETUNE = {"method": "lora", "lora": {"rank": 4, "target_modules": ["qkv", "proj", "fc1"]}, "layer_decay": 0.75,
            "ema_decay": 0.9}


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    return make_hf_vit_checkpoint(tmp_path_factory.mktemp("start"), num_labels=3, layers=2)


def lora_tree(tmp_path, data, start, batch: int) -> dict:  # noqa: F811
    tree = run_tree(tmp_path, data, batch)
    tree["training"]["num_train_epochs"] = EPOCHS
    tree["model"] = {"checkpoint": str(start)}
    tree["finetune"] = FINETUNE
    return tree


def test_two_process_lora_ema_run_matches_single_process(data, start, tmp_path):  # noqa: F811
    train(run_config_from_dict(lora_tree(tmp_path / "single", data, start, batch=8)))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(lora_tree(tmp_path / "two", data, start, batch=4)))
    run([*LAUNCHERS["torchrun"], SCRIPT, "--config", str(config)])
    last = f"checkpoint-{EPOCHS * STEPS_PER_EPOCH}"
    for name in ("model.safetensors", f"{ADAPTER_DIR}/adapter_model.safetensors", f"{last}/{EMA_FILE}",
                 f"{last}/{ADAPTER_DIR}/adapter_model.safetensors"):
        expected = load_file(str(tmp_path / "single" / "run" / name))
        actual = load_file(str(tmp_path / "two" / "run" / name))
        assert expected.keys() == actual.keys(), name
        for key in expected:
            assert torch.allclose(expected[key], actual[key], atol=1e-5), (name, key)
