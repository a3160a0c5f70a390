"""LoRA through peft: trainable parameters as peft counts them, the merged model against the adapter model,
the adapter reloaded on the base checkpoint, exact resume, and the output folder used without peft."""

import json
import subprocess
import sys

import numpy as np
import peft
import pytest
import torch
from safetensors.torch import load_file

from data_helpers import make_class_image
from test_finetune import CLASSES, LABELS, data_dir, finetune_tree, start  # noqa: F401  (shared fixtures)
from train_helpers import weights
from vit_finetune.config import run_config_from_dict
from vit_finetune.finetune_config import FinetuneConfig, LoraSettings
from vit_finetune.modeling import load_classifier
from vit_finetune.training.finetune import count_parameters, prepare_model
from vit_finetune.training.lora import ADAPTER_DIR, ADAPTER_FILES, merged_copy
from vit_finetune.training.run import train

ALL_TARGETS = {"rank": 4, "alpha": 8, "target_modules": ["qkv", "proj", "fc1", "fc2"]}
RUN = dict(num_train_epochs=2, gradient_accumulation_steps=2, load_best_model_at_end=False)
FINETUNE = {"method": "lora", "lora": ALL_TARGETS, "layer_decay": 0.75}


def lora_model(start):
    settings = LoraSettings(**{**ALL_TARGETS, "target_modules": tuple(ALL_TARGETS["target_modules"])})
    return prepare_model(load_classifier(start, id2label=LABELS), FinetuneConfig(method="lora", lora=settings))


def logits(model, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(pixels).logits


def test_trainable_parameters_as_peft_counts_them(start):
    model = lora_model(start)
    D, I, r, L, classes = 32, 64, 4, 2, len(LABELS)
    per_layer = r * (D + 3 * D) + r * (D + D) + r * (D + I) + r * (I + D)  # A (r, in) + B (out, r) per target
    assert model.get_nb_trainable_parameters() == count_parameters(model)
    assert count_parameters(model)[0] == L * per_layer + D * classes + classes  # adapters + the full head
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in name or "classifier.modules_to_save" in name for name in trainable)


def test_merged_logits_equal_the_adapter_model(start):
    model = lora_model(start)
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero (merge would be trivially exact): give the adapters weight
            torch.nn.init.normal_(parameter, std=0.2)
    pixels = torch.randn(4, 3, 32, 32)
    merged = merged_copy(model)
    assert not isinstance(merged, peft.PeftModel)
    with model.disable_adapter():
        without_adapters = logits(model, pixels)
    assert not torch.allclose(without_adapters, logits(model, pixels), atol=1e-3)  # the adapters matter
    assert torch.allclose(logits(merged, pixels), logits(model, pixels), atol=1e-5)


@pytest.fixture(scope="module")
def lora_run(data_dir, start, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("lora") / "run"
    result = train(run_config_from_dict(finetune_tree(data_dir, out, start, FINETUNE, **RUN)))
    return out, result


def test_output_folder_holds_merged_model_and_adapter(lora_run, start):  # noqa: F811
    out, result = lora_run
    for folder in (out, *out.glob("checkpoint-*")):
        assert all((folder / name).is_file() for name in ADAPTER_FILES), folder
    adapter = load_file(str(out / ADAPTER_DIR / "adapter_model.safetensors"))
    assert all(tensor.abs().max() > 0 for key, tensor in adapter.items() if "lora_B" in key)  # it trained
    assert json.loads((out / ADAPTER_DIR / "adapter_config.json").read_text())["r"] == 4
    assert result.metrics["trainable_parameters"] == lora_model(start).get_nb_trainable_parameters()[0]
    base, merged = weights(start), weights(out)
    assert base.keys() - {"classifier.weight", "classifier.bias"} < merged.keys()
    assert not torch.equal(merged["vit.encoder.layer.0.attention.attention.query.weight"],
                           base["vit.encoder.layer.0.attention.attention.query.weight"])  # adapters merged in
    assert torch.equal(merged["vit.embeddings.position_embeddings"], base["vit.embeddings.position_embeddings"])


def test_adapter_reloads_on_the_base_checkpoint_to_the_merged_logits(lora_run, start):  # noqa: F811
    out, _ = lora_run
    base = load_classifier(start, id2label=LABELS)  # a new random head: the adapter folder holds the trained one
    adapter_model = peft.PeftModel.from_pretrained(base, str(out / ADAPTER_DIR))
    pixels = torch.randn(6, 3, 32, 32)
    assert torch.allclose(logits(adapter_model, pixels), logits(load_classifier(out), pixels), atol=1e-5)


def test_lora_resume_is_bitwise_equal(lora_run, data_dir, start, tmp_path):  # noqa: F811
    out, _ = lora_run
    first = min(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    tree = finetune_tree(data_dir, tmp_path / "resumed", start, FINETUNE, **RUN)
    tree["training"]["resume_from_checkpoint"] = str(first)
    train(run_config_from_dict(tree))
    for name in ("model.safetensors", f"{ADAPTER_DIR}/adapter_model.safetensors"):
        expected, actual = load_file(str(out / name)), load_file(str(tmp_path / "resumed" / name))
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), (name, key)


def test_resume_on_another_base_is_refused(lora_run, data_dir, tmp_path):  # noqa: F811
    from helpers_hf import make_hf_vit_checkpoint

    out, _ = lora_run
    other = make_hf_vit_checkpoint(tmp_path / "other", num_labels=3, layers=2, seed=1)
    first = min(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    tree = finetune_tree(data_dir, tmp_path / "resumed", other, FINETUNE, **RUN)
    tree["training"]["resume_from_checkpoint"] = str(first)
    with pytest.raises(ValueError, match="not the base this adapter was trained on"):
        train(run_config_from_dict(tree))


WITHOUT_PEFT = """
import json, sys
sys.modules["peft"] = None  # importing peft fails, and transformers sees it as not installed
import transformers
from vit_finetune.commands import eval as eval_command
from vit_finetune.loading import load_for_inference
from vit_finetune.prediction import predict_files

out, images = sys.argv[1], sys.argv[2:]
assert eval_command.main(["--checkpoint", out, "--output-dir", out + "-eval", "--precision", "fp32"]) == 0
classify = transformers.pipeline("image-classification", model=out, device="cpu")
theirs = [{e["label"]: e["score"] for e in classify(path, top_k=4)} for path in images]
run = predict_files(load_for_inference(out), images, top_k=4, precision="fp32")
ours = [dict(p.top_k) for p in run.predictions]
print(json.dumps({"pipeline": theirs, "predict": ours, "peft": sys.modules["peft"] is not None}))
"""


def test_output_folder_works_in_eval_predict_and_pipeline_without_peft(lora_run, tmp_path):
    out, result = lora_run
    images = [tmp_path / f"{name}.png" for name in CLASSES]
    for index, (name, path) in enumerate(zip(CLASSES, images)):
        make_class_image(index, len(CLASSES), name, 32, np.random.default_rng(index)).save(path)
    done = subprocess.run([sys.executable, "-c", WITHOUT_PEFT, str(out), *map(str, images)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert not found["peft"]
    for theirs, ours in zip(found["pipeline"], found["predict"]):
        assert theirs.keys() == ours.keys() and all(abs(theirs[k] - ours[k]) <= 1e-4 for k in ours)
    evaluated = json.loads((out.parent / "run-eval" / "eval_results.json").read_text())
    assert evaluated["accuracy"] == pytest.approx(result.metrics["test_accuracy"], abs=1e-9)
