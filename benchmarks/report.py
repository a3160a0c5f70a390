"""The benchmark's outputs: `benchmark.json` (everything measured) and `benchmark.md` (tables, notes).

The report states what was measured; the project's goals for these ratios are kept in
docs/BENCHMARKS.md, next to the dated readings they are judged on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vit_finetune.run_files import write_json

JSON_FILE = "benchmark.json"
MARKDOWN_FILE = "benchmark.md"


def write_outputs(results: dict[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write benchmark.json and benchmark.md into `output_dir`; returns both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = results | {"summary": summary(results)}
    write_json(output_dir / JSON_FILE, results)
    (output_dir / MARKDOWN_FILE).write_text(render_markdown(results))
    return output_dir / JSON_FILE, output_dir / MARKDOWN_FILE


# ---- summary ---------------------------------------------------------------------------------


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline readings of the run, one row each: what was measured and the value."""
    rows = []
    for row in _measured(results.get("training", [])):
        rows.append(_row(f"training throughput {row['case']['name']} (ours / notebook)", row["ratio"]))
        if row.get("as_shipped_model", {}).get("patch_dropout"):
            rows.append(_row(f"training throughput {row['case']['name']}, configs/{row['case']['config']}.yaml "
                             "model as shipped (ours / notebook)", row["as_shipped_ratio"]))
    for part in _measured(results.get("encoder", [])):
        for row in part["rows"]:
            rows.append(_row(f"encoder fwd+bwd {row['arch']}-{row['size']} {row['image_size']}px {row['dtype']} "
                             "(ours / HF)", row["ratio"]))
    pre = results.get("preprocess", {})
    if "speedup" in pre:
        rows.append(_row("preprocessing 32->224 (batched / ViTImageProcessor)", pre["speedup"]))
        rows.append(_row("preprocessing max |diff| vs ViTImageProcessor", pre["max_abs_diff"]))
    meta = results.get("meta", {})
    if "seconds" in meta and meta.get("complete", True):
        rows.append(_row(f"benchmark run time ({meta['mode']}), s", meta["seconds"]))
    return rows


def _row(what: str, measured: float) -> dict[str, Any]:
    return {"what": what, "measured": measured}


def _measured(parts: list[Any]) -> list[dict[str, Any]]:
    """The parts that produced numbers (not skipped, not failed)."""
    return [part for part in parts if isinstance(part, dict) and "error" not in part and "skipped" not in part]


# ---- notes: what limits each ratio -----------------------------------------------------------


def training_notes(results: dict[str, Any]) -> list[str]:
    """Why a training ratio is what it is: input-pipeline share of the reference step, the model's share, precision."""
    notes = []
    peak = results.get("hardware", {})
    for row in _measured(results.get("training", [])):
        name, ratio = row["case"]["name"], row["ratio"]
        ref_step, ref_data = row["reference_step_s"], row["reference_data_s_per_batch"]
        cap = ref_step / max(ref_step - ref_data, 1e-9)  # Amdahl: the reference's model time is left
        text = (f"**{name}: {ratio:.2f}x**. Reference step {ref_step:.3f} s, of which "
                f"its input pipeline (file decode + ViTImageProcessor + collate) is {ref_data:.3f} s "
                f"({ref_data / ref_step:.0%}); ours {row['ours_step_s']:.3f} s with "
                f"{row['ours_data_s_per_batch']:.3f} s of input pipeline (augmentation included). A free input "
                f"pipeline with the same model speed would give at most {cap:.2f}x; the rest has to come from the "
                "model's forward+backward.")
        if row["ours_dataloader_num_workers"] == 0:  # then our step time includes our data work
            model_ratio = (ref_step - ref_data) / max(row["ours_step_s"] - row["ours_data_s_per_batch"], 1e-9)
            text += (f" Without the input pipelines, our model step (forward, backward, AdamW) is {model_ratio:.2f}x "
                     "the notebook's `ViTForImageClassification` step.")
        prof = row.get("profile", {}).get("ours")
        if prof:
            share = prof["share_by_kind"]
            text += (f" Profile of our forward+backward: {share['matmul']:.0%} matmul, {share['attention']:.0%} "
                     f"attention kernels, {share['other']:.0%} other ops (layer norm, GELU, copies, adds).")
        if row["ours_precision"] == "fp32" and "bf16_over_fp32" in peak and not peak["bf16_fast"]:
            text += (f" Ours trains in fp32 because bf16 matmul runs at {peak['bf16_over_fp32']:.3f}x the fp32 rate on "
                     "this CPU (no AMX / AVX512-BF16): the lever left for a compute-bound model, bf16 autocast (which "
                     "`precision: auto` turns on on GPUs and AMX CPUs while the notebook stays in fp32), is not "
                     "available here.")
        if row.get("as_shipped_model", {}).get("patch_dropout"):
            text += (f" As shipped, configs/{row['case']['config']}.yaml trains "
                     f"{_model_summary(row['as_shipped_model'])}: with PatchDropout that is a cheaper computation "
                     f"than the notebook's (fewer tokens per training step), so its {row['as_shipped_ratio']:.2f}x is "
                     f"what a user of the config gets, and {ratio:.2f}x is the like-for-like figure.")
        notes.append(text)
    return notes


def encoder_notes(results: dict[str, Any]) -> list[str]:
    """Encoder rows below parity (ours slower than HF): how far, and whether the process-CPU-time ratio agrees."""
    notes = []
    for part in _measured(results.get("encoder", [])):
        for row in part["rows"]:
            if row["ratio"] < 1.0:
                cpu = row.get("cpu_ratio")
                text = (f"Encoder {row['arch']}-{row['size']} {row['dtype']}: {row['ratio']:.2f}x by wall time. "
                        "Both encoders run the same torch kernels (SDPA attention, Linear, LayerNorm, GELU).")
                if cpu is not None:
                    text += (f" By process CPU time it is {cpu:.2f}x: " + (
                        "ours does no more work, the wall-time gap is other processes on the shared cores."
                        if cpu >= 1.0 else "ours used more CPU time in this run too."))
                notes.append(text)
    return notes


def preprocess_note(pre: dict[str, Any]) -> str:
    """What bounds the preprocessing speed-up, from the run's own figures."""
    fresh, pooled = pre["fresh_output_images_per_s"], pre["batched_images_per_s"]
    allocation = ("faulting in 602 KB of new pages per image cost more than computing it, which the pooled buffers avoid"
                  if fresh < 0.8 * pooled else "new pages were cheap in this run (their cost varies with the VM and the "
                  "process's allocation history), so the pool bought nothing here")
    return (f"Preprocessing: {pre['speedup']:.1f}x. Writing each batch into freshly "
            f"allocated memory instead of a pooled buffer ran at {fresh:.0f} img/s ({pre['fresh_output_speedup']:.1f}x): "
            f"{allocation}. What remains is mostly the output itself: 602 KB of float32 per image, written once by the "
            "row-stretching lerps at about the speed of a plain copy, after a one-core uint8 resize of the width.")


# ---- markdown --------------------------------------------------------------------------------


def render_markdown(results: dict[str, Any]) -> str:
    """The full report as Markdown."""
    meta = results["meta"]
    partial = "" if meta.get("complete", True) else ", partial: still running or stopped"
    lines = [f"# Benchmark ({meta['mode']}{partial})", "",
             f"- date: {meta['date']}", f"- machine: {meta['machine_summary']}",
             f"- command: `{meta['command']}`", f"- run time: {meta.get('seconds', 0) / 60:.1f} min", "",
             "Every ratio is measured side by side in this one run (same inputs, interleaved where possible); "
             "the hardware peak is measured in the same run.", ""]
    for section in (_summary_md, _training_md, _encoder_md, _preprocess_md, _utilisation_md, _scaling_md,
                    _inference_md, _notes_md):
        lines += section(results) + [""]
    return "\n".join(lines).rstrip() + "\n"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(_cell(name) for name in header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value).replace("|", "\\|")  # a literal | would end the table cell


def _problems(parts: list[Any]) -> list[str]:
    return [f"- {part.get('error') or part.get('skipped')}" for part in parts
            if isinstance(part, dict) and ("error" in part or "skipped" in part)]


def _summary_md(results: dict[str, Any]) -> list[str]:
    rows = [[row["what"], row["measured"]] for row in results.get("summary", summary(results))]
    return ["## Summary", ""] + _table(["measurement", "measured"], rows)


def _training_md(results: dict[str, Any]) -> list[str]:
    parts = results.get("training", [])
    rows = [[r["case"]["name"], r["case"]["batch_size"],
             f"{r['case']['warmup']}+{r['case']['steps']} x{r['case']['rounds']}",
             f"{r['ours_precision']} / {r['reference_precision']}", r["ours_images_per_s"], r["reference_images_per_s"],
             r["ratio"], f"{r['ours_data_s_per_batch']:.3f} / {r['reference_data_s_per_batch']:.3f}",
             f"{r['ours_step_s']:.3f} / {r['reference_step_s']:.3f}"] for r in _measured(parts)]
    shipped = [[r["case"]["name"], f"configs/{r['case']['config']}.yaml", _model_summary(r["as_shipped_model"]),
                r["as_shipped_images_per_s"], r["reference_images_per_s"], r["as_shipped_ratio"]]
               for r in _measured(parts) if "as_shipped_ratio" in r]
    header = ["case", "batch", "steps (warm-up+timed, x rounds)", "precision ours / ref", "ours img/s",
              "notebook img/s", "ratio", "input pipeline s/batch ours / ref", "step s ours / ref"]
    lines = (["## 1. Training throughput: ours vs the notebook pipeline", "",
              "Real CIFAR-10 images, the same randomly initialised checkpoint, batch, learning rate and steps; "
              "images/s from the median step time (data loading included). Input pipeline = each side's data "
              "work for one batch (read, decode, augment, preprocess, collate) timed alone in one process; "
              f"our side runs it in {_workers(_measured(parts))} DataLoader worker(s) as its config says, the "
              "notebook in the main process."]
             + [""] + _table(header, rows) + _problems(parts))
    if shipped:
        lines += (["", "Our side once more with the run config's own random-init model, as `scripts/train.py` "
                   "trains it (timed in the same rounds, same reference):", ""]
                  + _table(["case", "config", "model as shipped", "ours img/s", "notebook img/s", "ratio"], shipped))
    return lines


def _workers(rows: list[dict[str, Any]]) -> str:
    return "/".join(str(r["ours_dataloader_num_workers"]) for r in rows) or "0"


def _model_summary(model: dict[str, Any]) -> str:
    keys = ("hidden_size", "num_hidden_layers", "pooling", "patch_dropout")
    return ", ".join(f"{key} {model[key]}" for key in keys if model.get(key) is not None)


def _encoder_md(results: dict[str, Any]) -> list[str]:
    parts = results.get("encoder", [])
    rows = [[f"{r['arch']}-{r['size']}", r["image_size"], r["batch_size"], r["dtype"], r["ours_images_per_s"],
             r["hf_images_per_s"], r["ratio"], r.get("cpu_ratio", "-")]
            for part in _measured(parts) for r in part["rows"]]
    skipped = sorted({part["bf16_skipped"] for part in _measured(parts) if part.get("bf16_skipped")})
    return (["## 2. Encoder forward+backward: ours vs Hugging Face", ""]
            + _table(["encoder", "image", "batch", "dtype", "ours img/s", "HF img/s", "ratio",
                      "process-CPU-time ratio"], rows)
            + [f"\nbf16 rows skipped: {reason}." for reason in skipped] + _problems(parts))


def _preprocess_md(results: dict[str, Any]) -> list[str]:
    pre = results.get("preprocess", {})
    if "speedup" not in pre:
        return ["## 3. Preprocessing", ""] + _problems([pre])
    rows = [[pre["num_images"], pre["batch_size"], f"32 -> {pre['size']}", pre["batched_images_per_s"],
             pre["reference_images_per_s"], pre["speedup"], pre["max_abs_diff"], pre["fresh_output_images_per_s"],
             pre["fresh_output_speedup"]]]
    header = ["images", "batch", "resize", "ours img/s", "ViTImageProcessor img/s", "speed-up", "max |diff|",
              "ours, fresh output batches, img/s", "fresh speed-up"]
    return ["## 3. Preprocessing: batched path vs ViTImageProcessor", ""] + _table(header, rows)


def _utilisation_md(results: dict[str, Any]) -> list[str]:
    peak, use = results.get("hardware", {}), results.get("utilisation", {})
    if "fp32_flops_per_s" not in peak:
        return ["## 4. Hardware utilisation", ""] + _problems([peak])
    lines = ["## 4. Hardware utilisation", "",
             f"Peak matmul on {peak['device']}: fp32 {peak['fp32_flops_per_s'] / 1e9:.1f} GFLOP/s "
             f"({peak['fp32_matrix_size']}^2), bf16 {peak['bf16_flops_per_s'] / 1e9:.2f} GFLOP/s "
             f"({peak['bf16_matrix_size']}^2; {'fast' if peak['bf16_fast'] else 'emulated, no bf16 hardware'}). "
             f"MFU below is against the **{use.get('peak', peak['mfu_reference'])} peak**"
             + (" (the higher of two readings, at the start and mid-run: "
                + ", ".join(f"{r / 1e9:.1f}" for r in peak["mfu_reference_readings"]) + " GFLOP/s)"
                if "mfu_reference_readings" in peak else "")
             + ". Training FLOPs: matmuls only, forward x 3 (benchmarks/flops.py).", ""]
    rows = [[r["case"], r["training_flops_per_image"] / 1e9, r.get("ours_flops_per_s", 0) / 1e9,
             f"{r.get('ours_mfu', 0):.1%}", r.get("reference_flops_per_s", 0) / 1e9, f"{r.get('reference_mfu', 0):.1%}"]
            for r in use.get("rows", [])]
    return lines + _table(["case", "training GFLOP/image", "ours GFLOP/s", "ours MFU", "notebook GFLOP/s",
                           "notebook MFU"], rows)


def _scaling_md(results: dict[str, Any]) -> list[str]:
    part = results.get("scaling", {})
    if "by_image_size" not in part:
        return ["## 5. Scaling", ""] + _problems([part])
    peak = results.get("hardware", {}).get("mfu_reference_flops_per_s")
    rows = []
    for curve, points in (("image size", part["by_image_size"]), ("batch size", part["by_batch_size"])):
        for p in points:
            mfu = f"{p['images_per_s'] * p['training_flops_per_image'] / peak:.1%}" if peak else "-"
            rows.append([curve, p["image_size"], p["tokens"], p["batch_size"], p["precision"], p["images_per_s"],
                         p["loaded_mib"], p["step_peak_mib"], mfu])
    gpu = part["by_image_size"][0]["device"] == "cuda"
    loaded, peak_kind = ("GPU memory allocated", "max_memory_allocated") if gpu else ("process RSS", "sampled RSS peak")
    return (["## 5. Scaling (our training step: forward + backward + AdamW)", "",
             f"Model {part['case']}; other image sizes load it with interpolated position embeddings. Each point in "
             f"a fresh process. Loaded = {loaded} with the model loaded (on the CPU: Python, torch, transformers and "
             f"the weights); step peak = {peak_kind} above that (gradients, AdamW state, activations).", ""]
            + _table(["varied", "image", "tokens", "batch", "precision", "img/s", "loaded MiB", "step peak MiB",
                      "MFU"], rows))


def _inference_md(results: dict[str, Any]) -> list[str]:
    part = results.get("inference", {})
    if "eval" not in part:
        return ["## 6. Inference", ""] + _problems([part])
    evals = [[e["case"], e["images"], e["batch_size"], e["precision"], e["images_per_s"]] for e in part["eval"]]
    predicts = [[p["case"], p["cold"].get("skipped") or f"{p['cold']['seconds']:.2f} s",
                 f"{p['warm']['seconds'] * 1e3:.1f} ms"] for p in part["predict"]]
    return (["## 6. Inference", "", "Evaluation on the CIFAR-10 test split (`evaluation.collect_logits`):", ""]
            + _table(["model", "images", "batch", "precision", "img/s"], evals)
            + ["", "Single-image prediction: cold = `python scripts/predict.py --checkpoint DIR IMAGE`, process start "
               "to answer; warm = open + preprocess + forward with the model loaded:", ""]
            + _table(["model", "cold (whole process)", "warm (per image)"], predicts))


def _notes_md(results: dict[str, Any]) -> list[str]:
    notes = training_notes(results) + encoder_notes(results)
    pre = results.get("preprocess", {})
    if "speedup" in pre:
        notes.append(preprocess_note(pre))
    return ["## Notes: what limits the results", ""] + [f"- {note}" for note in notes]
