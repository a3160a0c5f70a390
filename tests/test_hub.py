"""Sharing a model: `training.push_to_hub=true` through the train command, with the Hub client's two calls
(`HfApi.create_repo`, `HfApi.upload_folder`) intercepted. The Trainer's own upload code runs; the stand-in
lists the files `upload_folder` would send (the folder filtered by the caller's ignore patterns and the
client's defaults, as `HfApi.upload_folder` filters it). Checked: the exact file list of every upload
(model, processor, model card, run files; no lock file, staging folder or checkpoint), and the model card
in the Hub's format."""

import json
from concurrent.futures import Future
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard, RepoUrl
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects
from transformers import TrainingArguments

from data_helpers import make_image_folder
from train_helpers import tiny_run_tree
from vit_finetune.commands.train import main
from vit_finetune.config import run_config_from_dict
from vit_finetune.modeling.config import ClassifierConfig, encoder_config_for_size
from vit_finetune.run_files import METRICS
from vit_finetune.training.checkpoints import LOCK_FILE, STAGING_DIR
from vit_finetune.training.model_card import model_card

REPO_ID = "alice/tiny-vit"
FINAL_FILES = ["README.md", "config.json", "metrics.json", "model.safetensors", "preprocessor_config.json",
               "run_config.yaml", "trainer_log.json", "training_curves.png"]
CHECKPOINT_PUSH_FILES = ["config.json", "model.safetensors", "training_args.bin"]  # the Trainer's every_save


class FakeHub:
    """Stands in for the Hub's two endpoints the Trainer calls; records what each upload would send."""

    def __init__(self) -> None:
        self.repos: list[str] = []
        self.uploads: list[dict] = []

    def create_repo(self, repo_id, **kwargs) -> RepoUrl:
        self.repos.append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, allow_patterns=None, ignore_patterns=None,
                      run_as_future=False, **kwargs):
        folder = Path(folder_path)
        present = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
        ignored = [*(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS]  # as HfApi.upload_folder adds them
        sent = list(filter_repo_objects(present, allow_patterns=allow_patterns, ignore_patterns=ignored))
        self.uploads.append({"repo_id": repo_id, "folder": folder, "path_in_repo": path_in_repo, "present": present,
                             "sent": sent, "readme": (folder / "README.md").read_text() if "README.md" in sent else None})
        if run_as_future:
            future = Future()
            future.set_result(None)
            return future
        return None


@pytest.fixture()
def hub(monkeypatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(HfApi, "create_repo", fake.create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake.upload_folder)
    return fake


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("hub-data"), classes=("red", "green", "blue"), per_class=10)


def train_and_push(data_dir: Path, tmp_path: Path, *overrides: str) -> Path:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run_tree(data_dir, tmp_path / "run", num_train_epochs=2)))
    assert main(["--config", str(config), "training.push_to_hub=true", f"training.hub_model_id={REPO_ID}",
                 *overrides]) == 0
    return tmp_path / "run"


@pytest.mark.parametrize("strategy", ["every_save", "end"])
def test_push_to_hub_uploads_model_processor_card_and_run_files_only(hub, data_dir, tmp_path, strategy):
    output_dir = train_and_push(data_dir, tmp_path, f"training.hub_strategy={strategy}")
    assert hub.repos == [REPO_ID]
    checkpoint_pushes = 2 if strategy == "every_save" else 0  # one per epoch
    assert len(hub.uploads) == checkpoint_pushes + 1
    for upload in hub.uploads:
        assert upload["repo_id"] == REPO_ID and upload["folder"] == output_dir and upload["path_in_repo"] is None
        assert LOCK_FILE in upload["present"]  # the run holds its lock during every upload, and none sends it
    for upload in hub.uploads[:-1]:
        assert upload["sent"] == CHECKPOINT_PUSH_FILES
        assert any(p.startswith(f"{STAGING_DIR}/checkpoint-") for p in upload["present"])  # pushed while staged
    final = hub.uploads[-1]
    assert final["sent"] == sorted(FINAL_FILES + (["training_args.bin"] if checkpoint_pushes else []))
    assert any(p.startswith("checkpoint-") for p in final["present"])  # checkpoints exist and stay local
    assert final["readme"] == (output_dir / "README.md").read_text()


def test_model_card_of_a_pushed_run(hub, data_dir, tmp_path):
    output_dir = train_and_push(data_dir, tmp_path, "training.hub_strategy=end", "training.learning_rate=0.002")
    text = hub.uploads[-1]["readme"]
    card = ModelCard(text)  # the Hub's own parser of the YAML metadata and the model-index
    metadata = card.data.to_dict()
    test_accuracy = json.loads((output_dir / METRICS).read_text())["test_accuracy"]
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-classification"
    assert {"image-classification", "vit"} <= set(metadata["tags"]) and metadata["metrics"] == ["accuracy"]
    assert "datasets" not in metadata and "base_model" not in metadata  # a local data set, trained from scratch
    (result,) = card.data.eval_results
    assert (result.task_type, result.metric_type, result.dataset_split) == ("image-classification", "accuracy", "test")
    assert result.metric_value == pytest.approx(test_accuracy) and result.dataset_name == data_dir.name
    assert f"**{test_accuracy:.2%}**" in text
    assert "| learning rate | 0.002 |" in text and "`blue`, `green`, `red`" in text
    assert "![Training loss and validation accuracy](training_curves.png)" in text
    assert text.count("| 3 | 1.00 |") == 1 and "| 6 | 2.00 |" in text  # one row per evaluation (step, epoch)
    assert str(tmp_path) not in text  # no local path


def test_model_card_names_hub_base_model_and_data_set():
    run = run_config_from_dict({"model": {"checkpoint": "google/vit-base-patch16-224-in21k"},
                                "data": {"dataset": "uoft-cs/cifar10"}})
    args = TrainingArguments(output_dir="runs/cifar10", hub_model_id="alice/vit-cifar10", report_to="none")
    config = ClassifierConfig(encoder=encoder_config_for_size("base"), num_labels=2, id2label={0: "cat", 1: "dog"})
    log = [{"loss": 0.9, "step": 50, "epoch": 0.5}, {"eval_loss": 0.2, "eval_accuracy": 0.97, "step": 100, "epoch": 1.0}]
    card = ModelCard(model_card(run, args, config, {"test_accuracy": 0.9876, "best_validation_accuracy": 0.97}, log))
    metadata = card.data.to_dict()
    assert metadata["datasets"] == ["uoft-cs/cifar10"]
    assert metadata["base_model"] == "google/vit-base-patch16-224-in21k"
    assert metadata["model-index"][0]["name"] == "vit-cifar10"
    assert "[google/vit-base-patch16-224-in21k](https://huggingface.co/google/vit-base-patch16-224-in21k)" in card.text
    assert "[uoft-cs/cifar10](https://huggingface.co/datasets/uoft-cs/cifar10)" in card.text
    assert 'pipeline("image-classification", model="alice/vit-cifar10")' in card.text
    assert "| 100 | 1.00 | 0.9000 | 0.2000 | 0.9700 |" in card.text
