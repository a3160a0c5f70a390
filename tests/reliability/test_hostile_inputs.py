"""Tiny inputs that used to hang or blow up memory: a FIFO named like an image (prediction and a training
folder), a 1 kB YAML alias bomb under a numeric key (file and command-line override), a model config.json
declaring ten million layers, a preprocessor_config.json of 100 000 px. Each is refused with the culprit
named. The probes run in one child process under a time and memory limit, so a hang or a blow-up fails
its test instead of stopping the suite."""

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vit_finetune.typed import coerce

from .helpers import REPO

PROBE_TIMEOUT = 120  # seconds for all probes together; each takes well under a second once fixed
PROBE_SECONDS = 15  # for one probe
PROBE_MEMORY = 6 * 2**30  # address space of the probe process (the libraries alone reserve ~2 GiB)
TESTS = Path(__file__).resolve().parents[1]


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """A flow-style YAML list whose anchors and aliases expand to width**levels integers (~1 kB of text)."""
    names = [chr(ord("a") + level) for level in range(levels)]
    items = [f"&{names[0]} [{', '.join(['1'] * width)}]"]
    items += [f"&{name} [{', '.join([f'*{previous}'] * width)}]" for previous, name in zip(names, names[1:])]
    return f"[{', '.join(items)}]"


# ---- what each probe does, in the child process -----------------------------------------------------------------

def probe_fifo_predict(inputs: Path) -> str:
    from vit_finetune.loading import load_for_inference
    from vit_finetune.prediction import predict_files

    run = predict_files(load_for_inference(inputs / "model"), [inputs / "fifo" / "x.jpg", inputs / "good.png"])
    assert len(run.predictions) == 1, run.predictions  # the good image is still predicted
    raise run.errors[0]


def probe_fifo_training_folder(inputs: Path) -> str:
    from vit_finetune.data.config import DataConfig
    from vit_finetune.data.sources import load_splits

    load_splits(DataConfig(dataset=str(inputs / "data-fifo"), cache_dir=str(inputs / "cache")))
    return "loaded"


def probe_alias_bomb_in_file(inputs: Path) -> str:
    from vit_finetune.config import load_run_config

    load_run_config(inputs / "bomb.yaml")
    return "loaded"


def probe_alias_bomb_in_override(inputs: Path) -> str:
    from vit_finetune.config import load_run_config

    load_run_config(inputs / "plain.yaml", [f"training.seed={alias_bomb()}"])
    return "loaded"


def probe_ten_million_layers(inputs: Path) -> str:
    from vit_finetune.loading import load_for_inference

    load_for_inference(inputs / "layers")
    return "loaded"


def probe_huge_preprocessor(inputs: Path) -> str:
    from vit_finetune.loading import load_for_inference
    from vit_finetune.prediction import predict_files

    return str(predict_files(load_for_inference(inputs / "pixels"), [inputs / "good.png"]))


EXPECTED = {  # probe -> (error class, fragment of the message)
    "probe_fifo_predict": ("ImageFileError", "x.jpg: not a regular file (a FIFO)"),
    "probe_fifo_training_folder": ("DataError", "x.jpg: not a regular file (a FIFO)"),
    "probe_alias_bomb_in_file": ("ConfigError", "bomb.yaml: YAML anchors and aliases are not allowed"),
    "probe_alias_bomb_in_override": ("ConfigError", "override 'training.seed=[&a [1, 1, "),
    "probe_ten_million_layers": ("CheckpointError", "num_hidden_layers"),
    "probe_huge_preprocessor": ("DataError", "preprocessor_config.json"),
}

RUN_PROBES = """
import importlib, signal, sys
from pathlib import Path
sys.path[:0] = [{tests!r}]
probes = importlib.import_module("reliability.test_hostile_inputs")

class Hung(BaseException):  # not an Exception: no `except Exception` in the code under test swallows it
    pass

def hung(signum, frame):
    raise Hung("still running after {seconds} s")

signal.signal(signal.SIGALRM, hung)
for name in sys.argv[1:]:
    print("start", name, flush=True)
    signal.alarm({seconds})  # interrupts a blocking open() or a Python loop; the overall time-out covers the rest
    try:
        outcome = ("returned", getattr(probes, name)(Path({inputs!r})))
    except BaseException as err:  # every outcome is reported; the test judges it
        outcome = (type(err).__name__, " ".join(str(err).split())[:1000])
    signal.alarm(0)
    print("outcome", name, *outcome, sep="\\t", flush=True)
"""


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (PROBE_MEMORY, PROBE_MEMORY))


@pytest.fixture(scope="module")
def outcomes(reference, data_dir, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Each probe's (error class, message) from one child process ("hung" / "not run" on a time-out)."""
    inputs = tmp_path_factory.mktemp("hostile")
    make_inputs(inputs, reference, data_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    code = RUN_PROBES.format(tests=str(TESTS), inputs=str(inputs), seconds=PROBE_SECONDS)
    try:
        done = subprocess.run([sys.executable, "-c", code, *EXPECTED], capture_output=True, text=True, env=env,
                              timeout=PROBE_TIMEOUT, preexec_fn=limit_memory)
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        stdout, stderr = (expired.stdout or b"").decode(), (expired.stderr or b"").decode()
    found = {name: ("not run", stderr[-2000:]) for name in EXPECTED}
    for line in stdout.splitlines():
        kind, name, *rest = line.split("\t") if line.startswith("outcome") else line.split(" ", 2)
        found[name] = tuple(rest) if kind == "outcome" else ("hung or crashed", stderr[-2000:])
    return found


def make_inputs(inputs: Path, reference: Path, data_dir: Path) -> None:
    shutil.copytree(reference, inputs / "model", ignore=shutil.ignore_patterns("checkpoint-*"))
    shutil.copy(next((data_dir / "test" / "red").iterdir()), inputs / "good.png")
    (inputs / "fifo").mkdir()
    os.mkfifo(inputs / "fifo" / "x.jpg")
    shutil.copytree(data_dir, inputs / "data-fifo")
    os.mkfifo(inputs / "data-fifo" / "train" / "red" / "x.jpg")
    (inputs / "bomb.yaml").write_text(f"training:\n  seed: {alias_bomb()}\n")
    (inputs / "plain.yaml").write_text(yaml.safe_dump({"training": {"output_dir": str(inputs / "run")}}))
    hf_model_folder(inputs / "layers", num_hidden_layers=10_000_000)
    shutil.copytree(inputs / "model", inputs / "pixels")
    processor = json.loads((inputs / "pixels" / "preprocessor_config.json").read_text())
    processor["size"] = {"height": 100_000, "width": 100_000}
    (inputs / "pixels" / "preprocessor_config.json").write_text(json.dumps(processor))


def hf_model_folder(folder: Path, **config: int) -> Path:
    """A tiny HF-native ViT folder whose config.json is then given `config`."""
    from .test_untrusted_files import tiny_model_folder

    tiny_model_folder(folder)
    stored = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(stored | config))
    return folder


@pytest.mark.parametrize("probe", EXPECTED)
def test_hostile_input_is_refused_quickly_naming_it(outcomes, probe):
    error, fragment = EXPECTED[probe]
    assert outcomes[probe][0] == error, outcomes[probe]
    assert fragment in outcomes[probe][1], outcomes[probe]


def test_an_error_message_renders_a_bounded_part_of_a_huge_value():
    """A value of a million items (aliases make such values from a few bytes) is shown cut short."""
    with pytest.raises(ValueError) as caught:
        coerce([list(range(1000))] * 1000, int, "training.seed")
    assert str(caught.value).startswith("training.seed: expected an integer, got [[0, 1, 2, ")
    assert len(str(caught.value)) < 300
