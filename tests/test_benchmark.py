"""The benchmark: the FLOP count against a hand count, and the quick mode end to end (structure, not speed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import datasets
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import command as benchmark_command
from benchmarks import suite
from benchmarks.encoder import compare_encoder_speed
from benchmarks.flops import flops_breakdown, forward_flops_per_image, training_flops_per_image
from benchmarks.report import render_markdown, summary
from benchmarks.training import TrainCase
from data_helpers import copy_cifar10_slice, make_image_folder, needs_cifar10
from vit_finetune.modeling import ClassifierConfig, build_classifier, encoder_config_for_size
from vit_finetune.modeling.layers import set_attn_implementation

REPO_ROOT = Path(__file__).resolve().parents[1]
MICRO = (("hidden_size", 32), ("num_hidden_layers", 1), ("num_attention_heads", 2), ("intermediate_size", 64))


def tiny_encoder():
    return encoder_config_for_size("tiny", image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=16)


def test_training_flops_match_a_hand_count():
    # 8 px, 4 px patches: N = 4 patches, T = 5 tokens (CLS), D = 8, I = 16, 1 layer, 10 labels.
    hand = {
        "patch_embed": 2 * 4 * (3 * 4 * 4) * 8,  # 3072
        "qkv": 2 * 5 * 8 * 24,  # 1920
        "attention_scores": 2 * 5 * 5 * 8,  # 400
        "attention_values": 2 * 5 * 5 * 8,  # 400
        "attention_output": 2 * 5 * 8 * 8,  # 640
        "mlp": 2 * 5 * 8 * 16 * 2,  # 2560
        "head": 2 * 8 * 10,  # 160
    }
    assert flops_breakdown(tiny_encoder(), 10) == hand
    assert forward_flops_per_image(tiny_encoder(), 10) == 9152
    assert training_flops_per_image(tiny_encoder(), 10) == 3 * 9152


def test_forward_flops_match_torch_flop_counter():
    config = encoder_config_for_size("tiny", image_size=32, patch_size=8, num_hidden_layers=2)
    model = build_classifier(ClassifierConfig(encoder=config, num_labels=10)).eval()
    set_attn_implementation(model, "eager")  # plain q kᵀ and AV matmuls: the flop counter has no rule for CPU SDPA
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(3, 3, 32, 32))
    assert counter.get_total_flops() == 3 * forward_flops_per_image(config, 10)


def test_vit_base_training_flops_are_the_known_figure():
    # ViT-B/16 at 224 px: the "17.6 GFLOPs" quoted in papers and timm are multiply-adds, i.e. ~35 GFLOPs.
    base = encoder_config_for_size("B/16", image_size=224)
    assert 2 * 17.4e9 < forward_flops_per_image(base, 1000) < 2 * 17.7e9
    assert training_flops_per_image(base, 10) == 3 * forward_flops_per_image(base, 10)


def micro_settings() -> suite.Settings:
    """The quick mode shrunk to micro models, so the whole benchmark runs in well under a minute."""
    case = TrainCase("micro-32", "cifar10-tiny", "cifar-tiny", 32, batch_size=4, steps=1, warmup=1,
                     model_overrides=MICRO, as_shipped=True)
    return dataclasses.replace(
        suite.QUICK, training=(case,),
        encoder=(suite.EncoderCase("vit", "tiny", 32, 2, steps=1), suite.EncoderCase("siglip", "tiny", 32, 2, steps=1)),
        preprocess_images=8, preprocess_batch_size=4, peak_fp32_size=64, peak_bf16_size=64, peak_slow_bf16_size=32,
        scaling_case="micro-32", scaling_image_sizes=(32, 48), scaling_batch_sizes=(2,), scaling_base_batch_size=2,
        scaling_steps=1, eval_cases=(("micro-32", 8),), eval_batch_size=4, predict_cases=("micro-32",),
        predict_runs=1, warm_repeats=1, profile=True)


def run_quick(tmp_path: Path, monkeypatch, data_dir: Path, **changes) -> tuple[dict, str]:
    monkeypatch.setattr(suite, "QUICK", dataclasses.replace(micro_settings(), **changes))
    out = tmp_path / "out"
    assert benchmark_command.main(["--quick", "--output-dir", str(out), "--data", str(data_dir)]) == 0
    return json.loads((out / "benchmark.json").read_text()), (out / "benchmark.md").read_text()


def check_common(results: dict, markdown: str) -> None:
    meta = results["meta"]
    assert meta["mode"] == "quick" and "--quick" in meta["command"] and meta["date"] and meta["complete"]
    assert {"cpu", "cpu_cores", "torch"} <= set(meta["machine"])
    assert results["hardware"]["fp32_flops_per_s"] > 0 and results["hardware"]["mfu_reference"] in ("fp32", "bf16")
    for part in results["encoder"]:
        assert {row["arch"] for row in part["rows"]} <= {"vit", "siglip"} and part["rows"][0]["ratio"] > 0
    points = results["scaling"]["by_image_size"] + results["scaling"]["by_batch_size"]
    assert [p["image_size"] for p in results["scaling"]["by_image_size"]] == list(suite.QUICK.scaling_image_sizes)
    assert all(p["images_per_s"] > 0 and p["step_peak_mib"] >= 0 and p["training_flops_per_image"] > 0 for p in points)
    assert all(isinstance(row["measured"], float) for row in results["summary"])
    for heading in ("# Benchmark (quick)", "## Summary", "## 1. Training", "## 2. Encoder", "## 3. Preprocessing",
                    "## 4. Hardware utilisation", "## 5. Scaling", "## 6. Inference", meta["machine_summary"],
                    meta["command"]):
        assert heading in markdown
    assert failures(results) == []


def failures(node) -> list:
    """Every `{"error": ...}` anywhere in the results."""
    if isinstance(node, dict):
        return ([node["error"]] if "error" in node else []) + [e for value in node.values() for e in failures(value)]
    if isinstance(node, list):
        return [e for value in node for e in failures(value)]
    return []


@needs_cifar10
def test_quick_benchmark_writes_json_and_markdown(tmp_path, monkeypatch):
    data = copy_cifar10_slice(tmp_path / "cifar10", {"train": 4, "test": 4})
    results, markdown = run_quick(tmp_path, monkeypatch, data, scaling_image_sizes=(32,))
    check_common(results, markdown)
    training = results["training"][0]
    assert training["ours_images_per_s"] > 0 and training["reference_images_per_s"] > 0
    assert training["ratio"] == pytest.approx(training["ours_images_per_s"] / training["reference_images_per_s"])
    assert set(training["profile"]) >= {"ours", "reference"}
    if (REPO_ROOT / "configs" / "cifar10-tiny.yaml").is_file():  # our side once more, as the config ships it
        assert training["as_shipped_ratio"] > 0 and training["as_shipped_model"]["hidden_size"] == 32
    assert results["preprocess"]["max_abs_diff"] <= 0.02
    assert results["utilisation"]["rows"][0]["ours_mfu"] > 0
    readings = results["hardware"]["mfu_reference_readings"]  # the peak, measured twice: the higher one counts
    assert len(readings) == 2 and results["utilisation"]["peak_flops_per_s"] == max(readings)
    assert results["preprocess"]["fresh_output_images_per_s"] > 0
    inference = results["inference"]
    assert inference["eval"][0]["images"] == 8 and inference["eval"][0]["images_per_s"] > 0
    cold = inference["predict"][0]["cold"]
    assert "skipped" in cold or cold["seconds"] > 0
    assert any(row["what"].startswith("training throughput") for row in results["summary"])
    assert "## Notes" in markdown and "micro-32" in markdown


def test_quick_benchmark_without_data_skips_the_data_parts(tmp_path, monkeypatch):
    results, markdown = run_quick(tmp_path, monkeypatch, tmp_path / "no-data", encoder=())
    check_common(results, markdown)
    assert "skipped" in results["training"][0] and "skipped" in results["preprocess"]
    assert "skipped" in results["inference"]
    assert "no data set at" in markdown


def test_report_renders_failed_and_partial_results():
    results = {"meta": {"mode": "full", "date": "d", "command": "c", "machine_summary": "m", "seconds": 1.0,
                        "complete": False},
               "hardware": {"error": "RuntimeError: boom"}, "training": [{"error": "ValueError: bad"}],
               "encoder": [], "preprocess": {"skipped": "no data"}, "utilisation": {}, "scaling": {"error": "x"},
               "inference": {"skipped": "no data"}}
    markdown = render_markdown(results)
    assert "ValueError: bad" in markdown and "RuntimeError: boom" in markdown and "partial" in markdown
    assert "run time" not in json.dumps(summary(results))  # the run time is reported for complete runs only


def test_pipeline_speed_command_times_the_training_input_path(tmp_path, monkeypatch, capsys):
    from benchmarks import preprocess

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = make_image_folder(tmp_path / "data", per_class=12, size=16)
    preprocess.main([str(folder), "--pipeline", "--size", "24", "--batch-size", "4", "--crop", "random_padded"])
    result = json.loads(capsys.readouterr().out)
    assert result["size"] == 24 and result["crop"] == "random_padded" and result["batch_size"] == 4
    assert result["images"] > 0 and result["images_per_s"] > 0


@pytest.mark.parametrize("fresh, expected", [(2_000.0, "the pooled buffers avoid"), (9_000.0, "bought nothing")])
def test_preprocess_note_reads_the_allocation_cost_from_the_run(fresh, expected):
    from benchmarks.report import preprocess_note

    note = preprocess_note({"speedup": 14.0, "batched_images_per_s": 7_000.0, "fresh_output_images_per_s": fresh,
                            "fresh_output_speedup": fresh / 500})
    assert expected in note and f"{fresh:.0f} img/s" in note


@pytest.mark.parametrize("arch", ["vit", "siglip"])
def test_encoder_benchmark_runs(arch):
    """Smoke test only (no timing assertion): both encoders build from one config and train a step."""
    result = compare_encoder_speed(arch, "cifar-tiny", image_size=32, batch_size=2, steps=1, warmup=0)
    assert result["ours_images_per_s"] > 0 and result["hf_images_per_s"] > 0 and result["ratio"] > 0
