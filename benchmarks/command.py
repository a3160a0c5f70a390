"""`python scripts/benchmark.py`: our pipeline vs the notebook pipeline, vs Hugging Face, and vs the hardware peak."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys


def build_parser(prog: str = "benchmark.py") -> argparse.ArgumentParser:
    """The `benchmark` command line (import-light, so --help is instant)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Measure training throughput against the classic notebook pipeline, the encoder against "
                    "Hugging Face, preprocessing against ViTImageProcessor, utilisation against this machine's "
                    "peak, scaling and inference latency, all side by side in one run. Writes benchmark.json "
                    "and benchmark.md into --output-dir.",
        epilog="example: benchmark.py --quick --output-dir runs/benchmark-quick",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small models and few steps (under 3 minutes on 2 CPU cores)")
    parser.add_argument("--output-dir", default="runs/benchmark",
                        help="where benchmark.json and benchmark.md go (default runs/benchmark)")
    parser.add_argument("--data", default="../shared/data/cifar10",
                        help="CIFAR-10 imagefolder (train/ and test/); parts that need it are skipped if absent")
    parser.add_argument("--compile", action="store_true",
                        help="train our side with torch.compile (TrainingArguments.torch_compile)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, run the benchmark, write its outputs; returns the exit status."""
    from vit_finetune.commands import run_guarded

    args = build_parser().parse_args(argv)
    command = " ".join(["python scripts/benchmark.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    return run_guarded(lambda: _benchmark(args, command))


def _benchmark(args: argparse.Namespace, command: str) -> int:
    from benchmarks.report import write_outputs
    from benchmarks.suite import FULL, QUICK, run_benchmark

    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs to stdout
        results = run_benchmark(QUICK if args.quick else FULL, args.data, command, args.compile,
                                on_progress=lambda partial: write_outputs(partial, args.output_dir))
    json_path, md_path = write_outputs(results, args.output_dir)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
