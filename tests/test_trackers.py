"""Experiment trackers through the user's command line: one `scripts/train.py` run with
`training.report_to=[tensorboard,mlflow,wandb]` (MLflow in a local SQLite store, W&B offline), then each
tracker's own files read back: they hold the train loss and eval accuracy the Trainer logged, the test
accuracy, and the model config. A tracker that is not installed is skipped (`pip install -e .[tracking]`)."""

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data_helpers import make_image_folder
from train_helpers import tiny_run_tree

REPO = Path(__file__).resolve().parent.parent
TRACKERS = ("tensorboard", "mlflow", "wandb")
INSTALLED = [name for name in TRACKERS if importlib.util.find_spec(name) is not None]


def needs(tracker: str):
    return pytest.mark.skipif(tracker not in INSTALLED, reason=f"{tracker} is not installed (.[tracking])")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> dict:
    """One training run reporting to every installed tracker; its folders and what the Trainer logged."""
    if not INSTALLED:
        pytest.skip("no experiment tracker installed (.[tracking])")
    tmp_path = tmp_path_factory.mktemp("trackers")
    data = make_image_folder(tmp_path / "data", classes=("red", "green", "blue"), per_class=10)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run_tree(data, tmp_path / "run", num_train_epochs=2, logging_steps=1)))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp_path)}
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "--config", str(config),
               f"training.report_to=[{','.join(INSTALLED)}]"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((tmp_path / "run" / "trainer_log.json").read_text())
    test_accuracy = json.loads((tmp_path / "run" / "metrics.json").read_text())["test_accuracy"]
    return {"tmp": tmp_path, "run": tmp_path / "run", "test_accuracy": test_accuracy,
            "loss": logged(log, "loss"), "eval_accuracy": logged(log, "eval_accuracy")}


def logged(log: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` in the Trainer's log history."""
    found = [(entry["step"], entry[key]) for entry in log if key in entry]
    assert found, key
    return found


def assert_same_series(actual: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [step for step, _ in actual] == [step for step, _ in expected]
    assert [value for _, value in actual] == pytest.approx([value for _, value in expected], rel=1e-6)


@needs("tensorboard")
def test_tensorboard_events_hold_train_loss_eval_and_test_accuracy(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (log_dir,) = (tracked["run"] / "runs").iterdir()  # the Trainer's default: output_dir/runs/<date>_<host>
    events = EventAccumulator(str(log_dir))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert_same_series(scalars["train/loss"], tracked["loss"])
    assert_same_series(scalars["eval/accuracy"], tracked["eval_accuracy"])
    assert [value for _, value in scalars["test/accuracy"]] == pytest.approx([tracked["test_accuracy"]])
    assert "model_config/text_summary" in events.Tags()["tensors"]  # ClassifierConfig.to_json_string


@needs("mlflow")
def test_mlflow_run_holds_train_loss_eval_and_test_accuracy_and_model_config(tracked):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked['tmp'] / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments)  # the test metrics land in the training run, not a second one
    history = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                       key=lambda m: m.step)] for key in ("loss", "eval_accuracy")}
    assert_same_series(history["loss"], tracked["loss"])
    assert_same_series(history["eval_accuracy"], tracked["eval_accuracy"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(tracked["test_accuracy"])
    assert run.info.status == "FINISHED"
    assert run.data.params["pooling"] == "mean" and run.data.params["num_labels"] == "3"  # ClassifierConfig.to_dict


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (`run-ID.wandb`): LevelDB log format after a 7-byte header,
    32 KiB blocks of chunks (crc32, length, type; type 1 = whole record, 2/3/4 = first/middle/last part)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, pending, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # too little room left for a chunk header: the block is padded
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@needs("wandb")
def test_wandb_offline_run_holds_train_loss_eval_and_test_accuracy_and_model_config(tracked):
    (run_file,) = (tracked["tmp"] / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    rows = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in records if record.WhichOneof("record_type") == "history"]
    series = {key: [(row["train/global_step"], row[key]) for row in rows if key in row]
              for key in ("train/loss", "eval/accuracy", "test/accuracy")}
    assert_same_series(series["train/loss"], tracked["loss"])
    assert_same_series(series["eval/accuracy"], tracked["eval_accuracy"])
    assert [value for _, value in series["test/accuracy"]] == pytest.approx([tracked["test_accuracy"]])
    config = {item.key: json.loads(item.value_json) for record in records
              if record.WhichOneof("record_type") == "config" for item in record.config.update}
    assert config["pooling"] == "mean" and config["num_labels"] == 3  # ClassifierConfig.to_dict
